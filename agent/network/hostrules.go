package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"reflect"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"sigs.k8s.io/knftables"
)

// berth's default network asks two things of the host beyond what its
// plugins do per pod, and berthd provides them once for the whole range
// instead: masquerading of the pods' traffic that leaves the range (what
// the bridge plugin's ipMasq does with a chain and rules per pod) and, for
// hosts whose iptables FORWARD policy is DROP (Docker leaves it so), the
// pods' forwarding accepted (what the firewall plugin does with rules per
// pod). Each pod's attach and detach ran 18 iptables commands for these
// (9 for ipMasq, 9 for the firewall plugin), every one of which reads
// the whole ruleset, so they grew with the pods: a 100-replica Deployment
// took 8.8 s to become ready with them and 6.0 s with the rules below
// (berthd.service's processes: 11.1 → 5.7 CPU seconds).
//
// Only berth's own default file gets them (what DefaultConfList writes,
// isDefault): an operator's configuration, or a default
// written by an earlier berthd with ipMasq and the firewall plugin, does
// what its plugins do.

// isDefault: the list is what DefaultConfList writes (for whatever lease
// directory it names), compared as JSON.
func isDefault(list *libcni.NetworkConfigList) bool {
	var have struct {
		Plugins []struct {
			IPAM struct {
				DataDir string `json:"dataDir"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if json.Unmarshal(list.Bytes, &have) != nil || len(have.Plugins) == 0 {
		return false
	}
	var a, b any
	if json.Unmarshal(list.Bytes, &a) != nil || json.Unmarshal(DefaultConfList(have.Plugins[0].IPAM.DataDir), &b) != nil {
		return false
	}
	return reflect.DeepEqual(a, b)
}

// PodTable is the nftables table of the default network's masquerading.
const PodTable = "berth-pods"

// hostRuleComment marks berth's iptables FORWARD rules.
const hostRuleComment = "berth: pods of " + DefaultSubnet

// forwardRules are the firewall plugin's two rules (traffic from a pod,
// replies to it), for the whole range.
var forwardRules = [][]string{
	{"-s", DefaultSubnet, "-m", "comment", "--comment", hostRuleComment, "-j", "ACCEPT"},
	{"-d", DefaultSubnet, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-m", "comment", "--comment", hostRuleComment, "-j", "ACCEPT"},
}

// ensureHostRules writes the masquerading table (replacing what is
// there: one transaction) and inserts the FORWARD rules that are missing
// where iptables is installed (without it, no iptables policy drops).
func ensureHostRules(ctx context.Context, nft knftables.Interface) error {
	tx := nft.NewTransaction()
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("berth: the default pod network's masquerading (agent/network)")})
	chain := &knftables.Chain{Name: "postrouting", Type: knftables.PtrTo(knftables.NATType),
		Hook: knftables.PtrTo(knftables.PostroutingHook), Priority: knftables.PtrTo(knftables.SNATPriority)}
	tx.Add(chain)
	tx.Flush(chain)
	// The bridge plugin's ipMasq: within the range and multicast stay
	// as they are.
	tx.Add(&knftables.Rule{Chain: "postrouting", Rule: knftables.Concat(
		"ip saddr", DefaultSubnet, "ip daddr !=", DefaultSubnet, "ip daddr != 224.0.0.0/4 masquerade")})
	if err := nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("nftables table %s: %w", PodTable, err)
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		return nil
	}
	var errs []error
	for _, r := range forwardRules {
		if exec.CommandContext(ctx, "iptables", append([]string{"-w", "-t", "filter", "-C", "FORWARD"}, r...)...).Run() == nil {
			continue
		}
		if out, err := exec.CommandContext(ctx, "iptables", append([]string{"-w", "-t", "filter", "-I", "FORWARD", "1"}, r...)...).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("iptables -I FORWARD %s: %w: %s", strings.Join(r, " "), err, out))
		}
	}
	return errors.Join(errs...)
}

// RemoveHostRules takes the default network's host rules away, for an
// uninstall (the packages' purge); a stop of berthd leaves them, so that
// the pods it leaves running keep their traffic.
func RemoveHostRules(ctx context.Context) error {
	nft, err := knftables.New(knftables.IPv4Family, PodTable)
	if err != nil {
		return err
	}
	tx := nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	errs := []error{nft.Run(ctx, tx)}
	if _, err := exec.LookPath("iptables"); err == nil {
		for _, r := range forwardRules {
			for exec.CommandContext(ctx, "iptables", append([]string{"-w", "-t", "filter", "-C", "FORWARD"}, r...)...).Run() == nil {
				if out, err := exec.CommandContext(ctx, "iptables", append([]string{"-w", "-t", "filter", "-D", "FORWARD"}, r...)...).CombinedOutput(); err != nil {
					errs = append(errs, fmt.Errorf("iptables -D FORWARD: %w: %s", err, out))
					break
				}
			}
		}
	}
	return errors.Join(errs...)
}
