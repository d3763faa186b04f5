package unitgen

import "path"

// hookProperties are the container's lifecycle hooks as unit commands:
// `berth-hook poststart <Bundle>` as ExecStartPost= and `berth-hook
// prestop <Bundle>` as ExecStop=, berth-hook being installed next to
// berth-init (Paths.Init). berth-hook reads the handlers from the
// bundle (agent/bundle HooksFile, which berthd writes), so the unit only
// says when they run. Init containers have no hooks in Kubernetes (the API
// refuses lifecycle on them; a sidecar's are run like a container's).
func (g *gen) hookProperties() []Property {
	lc := g.ctr.Lifecycle
	if lc == nil {
		return nil
	}
	var ps []Property
	hook, bundle := HookPath(g.in.Paths.Init), g.in.Paths.Bundle
	if lc.PostStart != nil {
		ps = append(ps, Property{
			Name: "ExecStartPost",
			Value: []ExecCommand{{
				Path: hook, Args: []string{hook, "poststart", bundle},
			}},
			Why: "the postStart hook runs once the workload runs ($MAINPID) and before the unit counts as started, as the kubelet runs it after StartContainer; its failure (IgnoreFailure=false) fails the start, so systemd runs the preStop hook, stops the container and restarts it as Restart= says, as the kubelet kills a container whose postStart hook failed",
		})
	}
	if lc.PreStop != nil {
		ps = append(ps, Property{
			Name: "ExecStop",
			Value: []ExecCommand{{
				Path: hook, Args: []string{hook, "prestop", bundle}, IgnoreFailure: true,
			}},
			Why: "the preStop hook runs before the stop signal, within the grace period, as the kubelet's killContainer runs it; skipped when the workload already ended on its own ($MAINPID unset), and its failure (reported, as the kubelet's FailedPreStopHook) does not change how the container ended",
		})
	}
	return ps
}

// HookPath is berth-hook, installed next to berth-init (init): a binary of
// its own, so that berth-init, run at every container start, does not link
// what the httpGet handler needs (package net, crypto/tls).
func HookPath(init string) string { return path.Join(path.Dir(init), "berth-hook") }
