package pods

import (
	"fmt"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/berth-dev/berth/unitgen"
)

// FieldErrors is a pod or name refused by validation: the apiserver's field
// errors (field.ErrorList, with its wording), in errdefs' invalid-argument
// class.
type FieldErrors field.ErrorList

func (e FieldErrors) Error() string { return field.ErrorList(e).ToAggregate().Error() }

// InvalidParameter puts FieldErrors in errdefs' invalid-argument class.
func (FieldErrors) InvalidParameter() {}

// FieldErrors returns the field errors, for the API's Invalid status.
func (e FieldErrors) FieldErrors() field.ErrorList { return field.ErrorList(e) }

// ValidateName is the one check of a pod's namespace and name, as the
// apiserver makes it (namespaces are DNS labels, pods DNS subdomains, so
// `web.v1` is a valid pod name). Every entry point that takes a name calls
// it before any path or unit name is built from it: neither can contain '/'
// or '_', nor be "." or "..".
func ValidateName(namespace, name string) error {
	if errs := unitgen.NameErrors(namespace, name); len(errs) > 0 {
		return FieldErrors(errs)
	}
	return nil
}

// validateContainers checks the container names of a pod, which name units
// and bundle directories: DNS labels, unique, at least one container.
func validateContainers(cs []string) error {
	var errs field.ErrorList
	p := field.NewPath("spec", "containers")
	if len(cs) == 0 {
		errs = append(errs, field.Required(p, ""))
	}
	seen := map[string]bool{}
	for i, n := range cs {
		np := p.Index(i).Child("name")
		for _, msg := range validation.IsDNS1123Label(n) {
			errs = append(errs, field.Invalid(np, n, msg))
		}
		if seen[n] {
			errs = append(errs, field.Duplicate(np, n))
		}
		seen[n] = true
	}
	if len(errs) > 0 {
		return FieldErrors(errs)
	}
	return nil
}

// under joins root and one path element built from validated names, and
// refuses anything that would not be a direct child of root: the second
// line of defence, so that no name can make RemoveAll reach outside berth's
// state and run directories.
func under(root, elem string) (string, error) {
	if elem == "" || elem == "." || elem == ".." || strings.ContainsAny(elem, "/\x00") {
		return "", fmt.Errorf("path element %q under %s: not a plain name", elem, root)
	}
	p := filepath.Join(root, elem)
	if filepath.Dir(p) != filepath.Clean(root) {
		return "", fmt.Errorf("path element %q leaves %s", elem, root)
	}
	return p, nil
}

// podDirs are where a pod's files live; every path is built from validated
// names through under.
type podDirs struct {
	state, run string // <state>/pods/<ns>_<pod>, <run>/pods/<ns>_<pod>
	containers string // <state>/containers
	ns, pod    string
}

func (r *Runtime) dirs(ns, pod string) (podDirs, error) {
	if err := ValidateName(ns, pod); err != nil {
		return podDirs{}, err
	}
	key := unitgen.PodKey(ns, pod)
	state, err := under(filepath.Join(r.cfg.StateDir, "pods"), key)
	if err != nil {
		return podDirs{}, err
	}
	run, err := under(filepath.Join(r.cfg.RunDir, "pods"), key)
	if err != nil {
		return podDirs{}, err
	}
	return podDirs{state: state, run: run, containers: filepath.Join(r.cfg.StateDir, "containers"), ns: ns, pod: pod}, nil
}

// bundle is a container's bundle directory.
func (d podDirs) bundle(ctr string) (string, error) {
	if errs := validation.IsDNS1123Label(ctr); len(errs) > 0 {
		return "", FieldErrors{field.Invalid(field.NewPath("spec", "containers").Key(ctr).Child("name"), ctr, errs[0])}
	}
	return under(d.containers, unitgen.ContainerKey(d.ns, d.pod, ctr))
}
