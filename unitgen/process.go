package unitgen

import (
	"path"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// defaultPath is the PATH of containerd's and Docker's default spec, used when
// neither the image nor the pod sets one.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// expand replaces $(NAME) references in s with their values, with the
// semantics of Kubernetes' expansion package
// (k8s.io/kubernetes/third_party/forked/golang/expansion), which the kubelet
// applies to env values, command and args:
//   - "$$" is an escaped "$", so "$$(X)" yields the literal "$(X)";
//   - "$(NAME)" with an unknown NAME stays verbatim, as does an unterminated "$(";
//   - a "$" followed by anything else is kept as it is.
func expand(s string, lookup func(string) (string, bool)) string { return Expand(s, lookup) }

// Expand is the kubelet's $(VAR) expansion (third_party/forked/golang/
// expansion), as described for expand; the prober (exec commands) and the
// volumes (subPathExpr) use it too. lookup reports whether a name is set.
func Expand(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString("$(")
				i++
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// envList is an ordered environment in which setting an existing name
// replaces its value in place (containerd's replaceOrAppendEnvValues).
type envList struct {
	names []string
	vals  map[string]string
}

func (e *envList) set(name, val string) {
	if e.vals == nil {
		e.vals = map[string]string{}
	}
	if _, ok := e.vals[name]; !ok {
		e.names = append(e.names, name)
	}
	e.vals[name] = val
}

func (e *envList) lookup(name string) (string, bool) {
	v, ok := e.vals[name]
	return v, ok
}

func (e *envList) strings() []string {
	out := make([]string, len(e.names))
	for i, n := range e.names {
		out[i] = n + "=" + e.vals[n]
	}
	return out
}

// containerEnv resolves the container's env like the kubelet's
// makeEnvironmentVariables: in declaration order, each value has its $(VAR)
// references expanded against the variables declared *before* it in the same
// container. The image's env is not part of that context (the kubelet never
// sees it; the runtime merges it later), so `$(PATH)` stays literal unless the
// pod declares PATH first. Service-link variables are not generated yet.
func (g *gen) containerEnv() (*envList, error) {
	env := &envList{}
	for i, e := range g.ctr.Env {
		if e.ValueFrom != nil {
			return nil, invalid(g.fp.Child("env").Index(i).Child("valueFrom"), "not supported by berth yet (only value)")
		}
		env.set(e.Name, expand(e.Value, env.lookup))
	}
	return env, nil
}

// processEnv is the final environment, in the order containerd builds it:
// the default PATH and HOSTNAME, then the image's env, then the container's,
// each replacing earlier values of the same name; HOME is added from the
// user's passwd entry when still unset, as runc does at exec time.
func processEnv(hostname string, imageEnv []string, ctr *envList, home string) []string {
	env := &envList{}
	env.set("PATH", defaultPath)
	env.set("HOSTNAME", hostname)
	for _, kv := range imageEnv {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			env.set(k, v)
		}
	}
	for _, n := range ctr.names {
		env.set(n, ctr.vals[n])
	}
	if _, ok := env.vals["HOME"]; !ok {
		env.set("HOME", home)
	}
	return env.strings()
}

// processArgs applies Kubernetes' rules (docs "Define a Command and Arguments
// for a Container"; containerd CRI getProcessArgs, migrated from moby):
//   - command given: it replaces the image's Entrypoint and the image's Cmd is
//     dropped; args, if given, follow it;
//   - only args given: image Entrypoint + args;
//   - neither: image Entrypoint + image Cmd.
//
// Command and args have $(VAR) expanded against the container's env first
// (kubelet ExpandContainerCommandAndArgs). An image Entrypoint of [""] means
// "reset" (Docker's ENTRYPOINT [""]).
func (g *gen) processArgs(env *envList) ([]string, error) {
	var command, args []string
	for _, s := range g.ctr.Command {
		command = append(command, expand(s, env.lookup))
	}
	for _, s := range g.ctr.Args {
		args = append(args, expand(s, env.lookup))
	}
	img := g.in.Image.Config
	if len(command) == 0 {
		if len(args) == 0 {
			args = slices.Clone(img.Cmd)
		}
		if !(len(img.Entrypoint) == 1 && img.Entrypoint[0] == "") {
			command = slices.Clone(img.Entrypoint)
		}
	}
	argv := append(command, args...)
	if len(argv) == 0 || argv[0] == "" {
		return nil, invalid(g.fp.Child("command"), "no command specified: neither the container nor its image (Entrypoint, Cmd) names a program to run")
	}
	return argv, nil
}

// workingDir is the container's workingDir, else the image's, else "/".
// runc and stage-1 need an absolute path.
func (g *gen) workingDir() (string, error) {
	if wd := g.ctr.WorkingDir; wd != "" {
		if !path.IsAbs(wd) {
			return "", invalid(g.fp.Child("workingDir"), "%q: must be an absolute path", wd)
		}
		return path.Clean(wd), nil
	}
	if wd := g.in.Image.Config.WorkingDir; wd != "" {
		if !path.IsAbs(wd) {
			return "", invalid(g.fp.Child("image"), "image WorkingDir %q: must be an absolute path", wd)
		}
		return path.Clean(wd), nil
	}
	return "/", nil
}

// ClusterDomain is the DNS domain of Services, the kubelet's default
// --cluster-domain.
const ClusterDomain = "cluster.local"

// PodHostname is the one answer to "what is this pod's hostname", used for
// the UTS namespace, $HOSTNAME, /etc/hostname and /etc/hosts. It is the
// kubelet's GeneratePodHostNameAndDomain (pkg/kubelet/kubelet_pods.go):
// spec.hostname if set, else the pod name cut to 63 characters with trailing
// '-' and '.' removed (truncatePodHostnameIfNeeded); with spec.subdomain the
// pod's FQDN is <hostname>.<subdomain>.<namespace>.svc.cluster.local, and
// with setHostnameAsFQDN the FQDN is the hostname itself, which may then be
// at most 64 characters (the kernel's __NEW_UTS_LEN).
func PodHostname(pod *corev1.Pod) (hostname, fqdn string, err error) {
	hostname = pod.Spec.Hostname
	if hostname == "" {
		hostname = pod.Name
		if len(hostname) > 63 {
			hostname = strings.TrimRight(hostname[:63], "-.")
		}
	} else if errs := validation.IsDNS1123Label(hostname); len(errs) > 0 {
		return "", "", invalid(field.NewPath("spec", "hostname"), "%q: %s", hostname, strings.Join(errs, "; "))
	}
	if sub := pod.Spec.Subdomain; sub != "" {
		if errs := validation.IsDNS1123Label(sub); len(errs) > 0 {
			return "", "", invalid(field.NewPath("spec", "subdomain"), "%q: %s", sub, strings.Join(errs, "; "))
		}
		fqdn = hostname + "." + sub + "." + pod.Namespace + ".svc." + ClusterDomain
	}
	if fqdn != "" && pod.Spec.SetHostnameAsFQDN != nil && *pod.Spec.SetHostnameAsFQDN {
		const max = 64
		if len(fqdn) > max {
			// The kubelet's words (pkg/kubelet/util GetNodenameForKernel).
			return "", "", invalid(field.NewPath("spec", "setHostnameAsFQDN"), "failed to construct FQDN from pod hostname and cluster domain, FQDN %s is too long (%d characters is the max, %d characters requested)", fqdn, max, len(fqdn))
		}
		hostname = fqdn
	}
	return hostname, fqdn, nil
}
