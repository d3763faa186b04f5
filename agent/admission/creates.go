package admission

import (
	"github.com/berth-dev/berth/agent/store"
)

// AdmittedStore is a store whose creates go through validating admission,
// for what berthd's own controllers create in namespaces: on a cluster the
// kubelet and the controllers create through the apiserver, so a quota
// such as count/events holds for their objects as for a client's, and a
// create it refuses is refused here too (the Event recorder logs and drops
// it, as client-go's does). Everything else is the store's own.
type AdmittedStore struct {
	*store.Store
	A *Admitter
}

// Create admits obj (LimitRanger's and ResourceQuota's Validate; the
// object is complete, its defaults applied by its maker), stores it and
// commits its usage, holding the namespace's admissions meanwhile.
func (s AdmittedStore) Create(res store.Resource, obj store.Object) error {
	if s.A == nil {
		return s.Store.Create(res, obj)
	}
	commit, err := s.A.Validate(res, obj, nil, false)
	if err != nil {
		return err
	}
	err = s.Store.Create(res, obj)
	commit(err == nil)
	return err
}
