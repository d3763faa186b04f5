package storage

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/berth-dev/berth/agent/store"
	"github.com/berth-dev/berth/agent/volumes"
)

// ClaimSource reads the claims pods' persistentVolumeClaim volumes name,
// and their volumes, from the store (volumes.ClaimSource).
type ClaimSource struct {
	Store interface {
		Get(res store.Resource, ns, name string, obj store.Object) error
	}
}

var _ volumes.ClaimSource = ClaimSource{}

// PersistentVolumeClaim implements volumes.ClaimSource.
func (s ClaimSource) PersistentVolumeClaim(ns, name string) (*corev1.PersistentVolumeClaim, error) {
	var c corev1.PersistentVolumeClaim
	if err := s.Store.Get(Claims, ns, name, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// PersistentVolume implements volumes.ClaimSource.
func (s ClaimSource) PersistentVolume(name string) (*corev1.PersistentVolume, error) {
	var v corev1.PersistentVolume
	if err := s.Store.Get(Volumes, "", name, &v); err != nil {
		return nil, err
	}
	return &v, nil
}
