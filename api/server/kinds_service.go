package server

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/berth-dev/berth/agent/store"
)

// Services (core/v1), defaulted as core/v1's SetDefaults_Service, their
// cluster IPs and node ports allocated as the apiserver's service REST
// allocates them (servicealloc.go), validated as pkg/apis/core/validation's
// ValidateService with its messages, printed with kubectl's columns; the
// Endpoints and EndpointSlices the endpoint controllers
// (agent/controllers/endpoints) keep for them.

func serviceKind() *kind {
	k := &kind{resource: "services", singular: "service", kind: "Service", namespaced: true,
		shortNames: []string{"svc"}, categories: []string{"all"}, subresources: []string{"status"}}
	k.new = func() store.Object { return &corev1.Service{} }
	k.ownsDependents = true // its EndpointSlices
	k.prepare = func(o store.Object) {
		svc := o.(*corev1.Service)
		svc.TypeMeta = metav1.TypeMeta{Kind: "Service", APIVersion: "v1"}
		defaultService(svc)
		// svcStrategy.PrepareForCreate: the status is the load balancer's.
		svc.Status = corev1.ServiceStatus{}
		normalizeClusterIPs(svc, nil)
	}
	k.prepareUpdate = func(o, old store.Object) {
		svc, os := o.(*corev1.Service), old.(*corev1.Service)
		defaultService(svc)
		svc.Status = os.Status
		// svcStrategy.PrepareForUpdate, then the service REST's
		// beginUpdate: what the client left out of what was allocated is
		// kept (an apply or replace without clusterIP or nodePort keeps
		// them), and clusterIP and clusterIPs are kept in step.
		dropTypeDependentFields(svc, os)
		patchAllocatedValues(svc, os)
		normalizeClusterIPs(svc, os)
	}
	k.validate = func(o store.Object) error { return fieldErrs(validateService(o.(*corev1.Service))) }
	k.validateUpdate = func(o, old store.Object) error {
		return fieldErrs(validateServiceUpdate(o.(*corev1.Service), old.(*corev1.Service)))
	}
	k.fields = func(o store.Object) fields.Set {
		s := metaFields(o, true)
		// ServiceSelectableFields (1.32).
		svc := o.(*corev1.Service)
		s["spec.clusterIP"] = svc.Spec.ClusterIP
		s["spec.type"] = string(svc.Spec.Type)
		return s
	}
	// kubectl's columns (printService).
	k.columns = []metav1.TableColumnDefinition{
		{Name: "Name", Type: "string", Format: "name", Description: metav1.ObjectMeta{}.SwaggerDoc()["name"]},
		{Name: "Type", Type: "string", Description: corev1.ServiceSpec{}.SwaggerDoc()["type"]},
		{Name: "Cluster-IP", Type: "string", Description: corev1.ServiceSpec{}.SwaggerDoc()["clusterIP"]},
		{Name: "External-IP", Type: "string", Description: corev1.ServiceSpec{}.SwaggerDoc()["externalIPs"]},
		{Name: "Port(s)", Type: "string", Description: corev1.ServiceSpec{}.SwaggerDoc()["ports"]},
		{Name: "Age", Type: "string", Description: metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]},
		{Name: "Selector", Type: "string", Priority: 1, Description: corev1.ServiceSpec{}.SwaggerDoc()["selector"]},
	}
	k.cells = func(o store.Object) []any {
		svc := o.(*corev1.Service)
		internal := "<none>"
		if len(svc.Spec.ClusterIPs) > 0 {
			internal = svc.Spec.ClusterIPs[0]
		}
		ports := servicePortString(svc.Spec.Ports)
		if ports == "" {
			ports = "<none>"
		}
		return []any{svc.Name, string(svc.Spec.Type), internal, serviceExternalIP(svc), ports, age(svc.CreationTimestamp), labels.FormatLabels(svc.Spec.Selector)}
	}
	return k
}

// defaultService is core/v1's SetDefaults_Service (1.32).
func defaultService(svc *corev1.Service) {
	sp := &svc.Spec
	if sp.SessionAffinity == "" {
		sp.SessionAffinity = corev1.ServiceAffinityNone
	}
	if sp.SessionAffinity == corev1.ServiceAffinityNone {
		sp.SessionAffinityConfig = nil
	}
	if sp.Type == "" {
		sp.Type = corev1.ServiceTypeClusterIP
	}
	for i := range sp.Ports {
		p := &sp.Ports[i]
		if p.Protocol == "" {
			p.Protocol = corev1.ProtocolTCP
		}
		if p.TargetPort == intstr.FromInt32(0) || p.TargetPort == intstr.FromString("") {
			p.TargetPort = intstr.FromInt32(p.Port)
		}
	}
	if sp.Type == corev1.ServiceTypeNodePort || sp.Type == corev1.ServiceTypeLoadBalancer {
		if sp.ExternalTrafficPolicy == "" {
			sp.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
		}
	}
	if sp.Type != corev1.ServiceTypeExternalName && sp.InternalTrafficPolicy == nil {
		cluster := corev1.ServiceInternalTrafficPolicyCluster
		sp.InternalTrafficPolicy = &cluster
	}
	if sp.SessionAffinity == corev1.ServiceAffinityClientIP &&
		(sp.SessionAffinityConfig == nil || sp.SessionAffinityConfig.ClientIP == nil || sp.SessionAffinityConfig.ClientIP.TimeoutSeconds == nil) {
		timeout := corev1.DefaultClientIPServiceAffinitySeconds
		sp.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &timeout}}
	}
	if sp.Type == corev1.ServiceTypeLoadBalancer && sp.AllocateLoadBalancerNodePorts == nil {
		sp.AllocateLoadBalancerNodePorts = ptr(true)
	}
}

func needsClusterIP(svc *corev1.Service) bool { return svc.Spec.Type != corev1.ServiceTypeExternalName }

func needsNodePort(svc *corev1.Service) bool {
	return svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer
}

func isHeadless(svc *corev1.Service) bool {
	return svc.Spec.ClusterIP == corev1.ClusterIPNone || len(svc.Spec.ClusterIPs) > 0 && svc.Spec.ClusterIPs[0] == corev1.ClusterIPNone
}

// dropTypeDependentFields is the service strategy's: a change of type
// clears what the old type had and the new one has no use for, when the
// client did not also change it (validation then says so).
func dropTypeDependentFields(svc, old *corev1.Service) {
	if needsClusterIP(old) && !needsClusterIP(svc) {
		if slices.Equal(svc.Spec.ClusterIPs, old.Spec.ClusterIPs) && svc.Spec.ClusterIP == old.Spec.ClusterIP {
			svc.Spec.ClusterIP, svc.Spec.ClusterIPs = "", nil
		}
		if apiequality.Semantic.DeepEqual(svc.Spec.IPFamilies, old.Spec.IPFamilies) {
			svc.Spec.IPFamilies = nil
		}
		if apiequality.Semantic.DeepEqual(svc.Spec.IPFamilyPolicy, old.Spec.IPFamilyPolicy) {
			svc.Spec.IPFamilyPolicy = nil
		}
	}
	if needsNodePort(old) && !needsNodePort(svc) && sameNodePorts(svc, old) {
		for i := range svc.Spec.Ports {
			svc.Spec.Ports[i].NodePort = 0
		}
	}
	if needsNodePort(old) && !needsNodePort(svc) && svc.Spec.ExternalTrafficPolicy == old.Spec.ExternalTrafficPolicy {
		svc.Spec.ExternalTrafficPolicy = ""
	}
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer && old.Spec.Type == corev1.ServiceTypeLoadBalancer &&
		apiequality.Semantic.DeepEqual(svc.Spec.AllocateLoadBalancerNodePorts, old.Spec.AllocateLoadBalancerNodePorts) {
		svc.Spec.AllocateLoadBalancerNodePorts = nil
	}
	if !needsClusterIP(svc) && needsClusterIP(old) && apiequality.Semantic.DeepEqual(svc.Spec.InternalTrafficPolicy, old.Spec.InternalTrafficPolicy) {
		svc.Spec.InternalTrafficPolicy = nil
	}
}

// sameNodePorts: the two carry the same node ports, port by port.
func sameNodePorts(a, b *corev1.Service) bool {
	if len(a.Spec.Ports) != len(b.Spec.Ports) {
		return false
	}
	for i := range a.Spec.Ports {
		if a.Spec.Ports[i].NodePort != b.Spec.Ports[i].NodePort {
			return false
		}
	}
	return true
}

// patchAllocatedValues is the service REST's: what was allocated and the
// update leaves out is kept.
func patchAllocatedValues(svc, old *corev1.Service) {
	if needsClusterIP(old) && needsClusterIP(svc) {
		if svc.Spec.ClusterIP == "" {
			svc.Spec.ClusterIP = old.Spec.ClusterIP
		}
		if len(svc.Spec.ClusterIPs) == 0 && len(old.Spec.ClusterIPs) > 0 {
			svc.Spec.ClusterIPs = old.Spec.ClusterIPs
		}
		if len(svc.Spec.IPFamilies) == 0 {
			svc.Spec.IPFamilies = old.Spec.IPFamilies
		}
		if svc.Spec.IPFamilyPolicy == nil {
			svc.Spec.IPFamilyPolicy = old.Spec.IPFamilyPolicy
		}
	}
	if needsNodePort(old) && needsNodePort(svc) {
		for i := range svc.Spec.Ports {
			p := &svc.Spec.Ports[i]
			if p.NodePort == 0 {
				for _, op := range old.Spec.Ports {
					if op.Port == p.Port && op.NodePort != 0 {
						p.NodePort = op.NodePort
						break
					}
				}
			}
		}
	}
}

// normalizeClusterIPs is the service REST's NormalizeClusterIPs: a client
// that sets only clusterIP (every kubectl manifest) gets clusterIPs set
// from it; an update that changes one of them changes the other.
func normalizeClusterIPs(svc, old *corev1.Service) {
	if old == nil {
		if svc.Spec.ClusterIP != "" && len(svc.Spec.ClusterIPs) == 0 {
			svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
		}
		return
	}
	if len(old.Spec.ClusterIPs) > 0 && len(svc.Spec.ClusterIPs) == 0 && old.Spec.ClusterIP == svc.Spec.ClusterIP {
		svc.Spec.ClusterIPs = old.Spec.ClusterIPs
	}
	if old.Spec.ClusterIP != svc.Spec.ClusterIP && slices.Equal(old.Spec.ClusterIPs, svc.Spec.ClusterIPs) {
		if old.Spec.ClusterIP != "" && svc.Spec.ClusterIP == "" {
			svc.Spec.ClusterIPs = nil
		} else {
			svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
		}
	}
}

var (
	supportedServiceTypes     = []string{string(corev1.ServiceTypeClusterIP), string(corev1.ServiceTypeExternalName), string(corev1.ServiceTypeLoadBalancer), string(corev1.ServiceTypeNodePort)}
	supportedServiceProtocols = []string{string(corev1.ProtocolSCTP), string(corev1.ProtocolTCP), string(corev1.ProtocolUDP)}
	supportedSessionAffinity  = []string{string(corev1.ServiceAffinityClientIP), string(corev1.ServiceAffinityNone)}
	supportedTrafficPolicies  = []string{string(corev1.ServiceExternalTrafficPolicyCluster), string(corev1.ServiceExternalTrafficPolicyLocal)}
)

// validateService is pkg/apis/core/validation's ValidateService (1.32)
// for a single-stack IPv4 node: its rules and its words.
func validateService(svc *corev1.Service) field.ErrorList {
	var errs field.ErrorList
	sp := field.NewPath("spec")
	headless := isHeadless(svc)
	switch svc.Spec.Type {
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer:
	case corev1.ServiceTypeExternalName:
		if len(svc.Spec.ClusterIPs) > 0 || svc.Spec.ClusterIP != "" {
			errs = append(errs, field.Forbidden(sp.Child("clusterIPs"), "may not be set for ExternalName services"))
		}
		if len(svc.Spec.IPFamilies) > 0 {
			errs = append(errs, field.Forbidden(sp.Child("ipFamilies"), "may not be set for ExternalName services"))
		}
		if svc.Spec.IPFamilyPolicy != nil {
			errs = append(errs, field.Forbidden(sp.Child("ipFamilyPolicy"), "may not be set for ExternalName services"))
		}
		cname := strings.TrimSuffix(svc.Spec.ExternalName, ".")
		if cname == "" {
			errs = append(errs, field.Required(sp.Child("externalName"), ""))
		} else {
			for _, msg := range validation.IsDNS1123Subdomain(cname) {
				errs = append(errs, field.Invalid(sp.Child("externalName"), svc.Spec.ExternalName, msg))
			}
		}
	default:
		errs = append(errs, field.NotSupported(sp.Child("type"), svc.Spec.Type, supportedServiceTypes))
	}
	if len(svc.Spec.Ports) == 0 && !headless && svc.Spec.Type != corev1.ServiceTypeExternalName {
		errs = append(errs, field.Required(sp.Child("ports"), ""))
	}
	names := sets.New[string]()
	for i := range svc.Spec.Ports {
		errs = append(errs, validateServicePort(&svc.Spec.Ports[i], len(svc.Spec.Ports) > 1, names, sp.Child("ports").Index(i))...)
	}
	if svc.Spec.Selector != nil {
		errs = append(errs, metav1validation.ValidateLabels(svc.Spec.Selector, sp.Child("selector"))...)
	}
	if !sets.New(supportedSessionAffinity...).Has(string(svc.Spec.SessionAffinity)) {
		errs = append(errs, field.NotSupported(sp.Child("sessionAffinity"), svc.Spec.SessionAffinity, supportedSessionAffinity))
	}
	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			if t := *c.ClientIP.TimeoutSeconds; t <= 0 || t > maxClientIPAffinitySeconds {
				errs = append(errs, field.Invalid(sp.Child("sessionAffinityConfig", "clientIP", "timeoutSeconds"), t,
					fmt.Sprintf("must be greater than 0 and less than %d", maxClientIPAffinitySeconds)))
			}
		}
	} else if svc.Spec.SessionAffinityConfig != nil {
		errs = append(errs, field.Invalid(sp.Child("sessionAffinityConfig"), svc.Spec.SessionAffinityConfig,
			fmt.Sprintf("must not be set when session affinity is %s", svc.Spec.SessionAffinity)))
	}
	if svc.Spec.Type != corev1.ServiceTypeExternalName {
		errs = append(errs, validateClusterIPs(svc)...)
	}
	if headless && svc.Spec.Type == corev1.ServiceTypeNodePort {
		errs = append(errs, field.Invalid(sp.Child("clusterIPs").Index(0), corev1.ClusterIPNone, "may not be set to 'None' for NodePort services"))
	}
	if headless && svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		errs = append(errs, field.Invalid(sp.Child("clusterIPs").Index(0), corev1.ClusterIPNone, "may not be set to 'None' for LoadBalancer services"))
	}
	if svc.Spec.Type == corev1.ServiceTypeClusterIP {
		for i, p := range svc.Spec.Ports {
			if p.NodePort != 0 {
				errs = append(errs, field.Forbidden(sp.Child("ports").Index(i).Child("nodePort"), "may not be used when `type` is 'ClusterIP'"))
			}
		}
	}
	// One node port per protocol; one port per protocol.
	nodePorts, ports := map[string]bool{}, map[string]bool{}
	for i, p := range svc.Spec.Ports {
		pp := sp.Child("ports").Index(i)
		if p.NodePort != 0 {
			key := fmt.Sprintf("%d/%s", p.NodePort, p.Protocol)
			if nodePorts[key] {
				errs = append(errs, field.Duplicate(pp.Child("nodePort"), p.NodePort))
			}
			nodePorts[key] = true
		}
		key := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		if ports[key] {
			errs = append(errs, field.Duplicate(pp, corev1.ServicePort{Port: p.Port, Protocol: p.Protocol}))
		}
		ports[key] = true
	}
	if needsNodePort(svc) {
		if svc.Spec.ExternalTrafficPolicy != "" && !sets.New(supportedTrafficPolicies...).Has(string(svc.Spec.ExternalTrafficPolicy)) {
			errs = append(errs, field.NotSupported(sp.Child("externalTrafficPolicy"), svc.Spec.ExternalTrafficPolicy, supportedTrafficPolicies))
		}
	} else if svc.Spec.ExternalTrafficPolicy != "" {
		errs = append(errs, field.Invalid(sp.Child("externalTrafficPolicy"), svc.Spec.ExternalTrafficPolicy, "may only be set for externally-accessible services"))
	}
	if p := svc.Spec.InternalTrafficPolicy; p != nil && *p != corev1.ServiceInternalTrafficPolicyCluster && *p != corev1.ServiceInternalTrafficPolicyLocal {
		errs = append(errs, field.NotSupported(sp.Child("internalTrafficPolicy"), *p, []string{"Cluster", "Local"}))
	}
	for i, ip := range svc.Spec.ExternalIPs {
		if a, err := netip.ParseAddr(ip); err != nil || !a.IsValid() {
			errs = append(errs, field.Invalid(sp.Child("externalIPs").Index(i), ip, "must be a valid IP address"))
		}
	}
	return errs
}

// validateClusterIPs is ValidateServiceClusterIPsRelatedFields for one
// IPv4 family.
func validateClusterIPs(svc *corev1.Service) field.ErrorList {
	var errs field.ErrorList
	f := field.NewPath("spec", "clusterIPs")
	if svc.Spec.ClusterIP != "" {
		if len(svc.Spec.ClusterIPs) == 0 {
			errs = append(errs, field.Required(f, ""))
		} else if svc.Spec.ClusterIPs[0] != svc.Spec.ClusterIP {
			errs = append(errs, field.Invalid(f, svc.Spec.ClusterIPs, "first value must match `clusterIP`"))
		}
	} else if len(svc.Spec.ClusterIPs) != 0 {
		errs = append(errs, field.Invalid(f, svc.Spec.ClusterIPs, "must be empty when `clusterIP` is not specified"))
	}
	for i, ip := range svc.Spec.ClusterIPs {
		if ip == corev1.ClusterIPNone {
			if i > 0 || len(svc.Spec.ClusterIPs) > 1 {
				errs = append(errs, field.Invalid(f, svc.Spec.ClusterIPs, "'None' must be the first and only value"))
			}
			continue
		}
		if a, err := netip.ParseAddr(ip); err != nil || a.Zone() != "" {
			errs = append(errs, field.Invalid(f.Index(i), ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"))
		}
	}
	if len(svc.Spec.ClusterIPs) > 1 {
		errs = append(errs, field.Invalid(f, svc.Spec.ClusterIPs, "may specify no more than one IP for each IP family"))
	}
	for i, fam := range svc.Spec.IPFamilies {
		if fam != corev1.IPv4Protocol && fam != corev1.IPv6Protocol {
			errs = append(errs, field.NotSupported(field.NewPath("spec", "ipFamilies").Index(i), fam, []string{"IPv4", "IPv6"}))
		} else if fam == corev1.IPv6Protocol {
			// The node's service range is one IPv4 range.
			errs = append(errs, field.Invalid(field.NewPath("spec", "ipFamilies").Index(i), fam, "not configured on this cluster"))
		}
	}
	if p := svc.Spec.IPFamilyPolicy; p != nil {
		switch *p {
		case corev1.IPFamilyPolicySingleStack, corev1.IPFamilyPolicyPreferDualStack:
		case corev1.IPFamilyPolicyRequireDualStack:
			errs = append(errs, field.Invalid(field.NewPath("spec", "ipFamilyPolicy"), *p, "this cluster is not configured for dual-stack services"))
		default:
			errs = append(errs, field.NotSupported(field.NewPath("spec", "ipFamilyPolicy"), *p, []string{"PreferDualStack", "RequireDualStack", "SingleStack"}))
		}
	}
	return errs
}

// validateServicePort is ValidateServicePort.
func validateServicePort(p *corev1.ServicePort, requireName bool, names sets.Set[string], fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	if requireName && p.Name == "" {
		errs = append(errs, field.Required(fp.Child("name"), ""))
	} else if p.Name != "" {
		for _, msg := range validation.IsDNS1123Label(p.Name) {
			errs = append(errs, field.Invalid(fp.Child("name"), p.Name, msg))
		}
		if names.Has(p.Name) {
			errs = append(errs, field.Duplicate(fp.Child("name"), p.Name))
		} else {
			names.Insert(p.Name)
		}
	}
	for _, msg := range validation.IsValidPortNum(int(p.Port)) {
		errs = append(errs, field.Invalid(fp.Child("port"), p.Port, msg))
	}
	if p.Protocol == "" {
		errs = append(errs, field.Required(fp.Child("protocol"), ""))
	} else if !sets.New(supportedServiceProtocols...).Has(string(p.Protocol)) {
		errs = append(errs, field.NotSupported(fp.Child("protocol"), p.Protocol, supportedServiceProtocols))
	}
	errs = append(errs, validatePortNumOrName(p.TargetPort, fp.Child("targetPort"))...)
	if p.AppProtocol != nil {
		for _, msg := range validation.IsQualifiedName(*p.AppProtocol) {
			errs = append(errs, field.Invalid(fp.Child("appProtocol"), *p.AppProtocol, msg))
		}
	}
	return errs
}

// validatePortNumOrName is ValidatePortNumOrName.
func validatePortNumOrName(port intstr.IntOrString, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	if port.Type == intstr.Int {
		for _, msg := range validation.IsValidPortNum(port.IntValue()) {
			errs = append(errs, field.Invalid(fp, port.IntValue(), msg))
		}
	} else {
		for _, msg := range validation.IsValidPortName(port.StrVal) {
			errs = append(errs, field.Invalid(fp, port.StrVal, msg))
		}
	}
	return errs
}

// validateServiceUpdate is ValidateServiceUpdate: an allocated cluster IP
// does not change (validateUpgradeDowngradeClusterIPs).
func validateServiceUpdate(svc, old *corev1.Service) field.ErrorList {
	var errs field.ErrorList
	if svc.Spec.Type == corev1.ServiceTypeExternalName || old.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	if isHeadless(svc) && isHeadless(old) {
		return nil
	}
	switch {
	case len(old.Spec.ClusterIPs) == len(svc.Spec.ClusterIPs):
		for i, ip := range old.Spec.ClusterIPs {
			if ip != svc.Spec.ClusterIPs[i] {
				errs = append(errs, field.Invalid(field.NewPath("spec", "clusterIPs").Index(i), svc.Spec.ClusterIPs, "may not change once set"))
			}
		}
	case len(old.Spec.ClusterIPs) > len(svc.Spec.ClusterIPs) && len(svc.Spec.ClusterIPs) == 0:
		errs = append(errs, field.Invalid(field.NewPath("spec", "clusterIPs").Index(0), svc.Spec.ClusterIPs, "primary clusterIP can not be unset"))
	}
	return errs
}

// servicePortString is makePortString: port[:nodePort]/protocol, joined.
func servicePortString(ports []corev1.ServicePort) string {
	pieces := make([]string, len(ports))
	for i, p := range ports {
		pieces[i] = fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		if p.NodePort > 0 {
			pieces[i] = fmt.Sprintf("%d:%d/%s", p.Port, p.NodePort, p.Protocol)
		}
	}
	return strings.Join(pieces, ",")
}

// serviceExternalIP is getServiceExternalIP (wide, as the apiserver's
// Table has it).
func serviceExternalIP(svc *corev1.Service) string {
	switch svc.Spec.Type {
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort:
		if len(svc.Spec.ExternalIPs) > 0 {
			return strings.Join(svc.Spec.ExternalIPs, ",")
		}
		return "<none>"
	case corev1.ServiceTypeLoadBalancer:
		var out []string
		for _, in := range svc.Status.LoadBalancer.Ingress {
			if in.IP != "" {
				out = append(out, in.IP)
			} else if in.Hostname != "" {
				out = append(out, in.Hostname)
			}
		}
		out = append(out, svc.Spec.ExternalIPs...)
		if len(out) == 0 {
			return "<pending>"
		}
		return strings.Join(out, ",")
	case corev1.ServiceTypeExternalName:
		return svc.Spec.ExternalName
	}
	return "<unknown>"
}

// endpointsKind is core/v1 Endpoints, kept by the endpoints controller.
func endpointsKind() *kind {
	k := &kind{resource: "endpoints", singular: "endpoints", kind: "Endpoints", namespaced: true, shortNames: []string{"ep"}}
	k.new = func() store.Object { return &corev1.Endpoints{} }
	k.prepare = func(o store.Object) {
		o.(*corev1.Endpoints).TypeMeta = metav1.TypeMeta{Kind: "Endpoints", APIVersion: "v1"}
		defaultEndpoints(o.(*corev1.Endpoints))
	}
	k.prepareUpdate = func(o, _ store.Object) { defaultEndpoints(o.(*corev1.Endpoints)) }
	k.validate = func(o store.Object) error { return fieldErrs(validateEndpoints(o.(*corev1.Endpoints))) }
	k.fields = func(o store.Object) fields.Set { return metaFields(o, true) }
	k.columns = []metav1.TableColumnDefinition{
		{Name: "Name", Type: "string", Format: "name", Description: metav1.ObjectMeta{}.SwaggerDoc()["name"]},
		{Name: "Endpoints", Type: "string", Description: corev1.Endpoints{}.SwaggerDoc()["subsets"]},
		{Name: "Age", Type: "string", Description: metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]},
	}
	k.cells = func(o store.Object) []any {
		ep := o.(*corev1.Endpoints)
		return []any{ep.Name, formatEndpoints(ep), age(ep.CreationTimestamp)}
	}
	return k
}

// defaultEndpoints is SetDefaults_EndpointPort: TCP.
func defaultEndpoints(ep *corev1.Endpoints) {
	for i := range ep.Subsets {
		for j := range ep.Subsets[i].Ports {
			if ep.Subsets[i].Ports[j].Protocol == "" {
				ep.Subsets[i].Ports[j].Protocol = corev1.ProtocolTCP
			}
		}
	}
}

// validateEndpoints is ValidateEndpoints' address and port rules.
func validateEndpoints(ep *corev1.Endpoints) field.ErrorList {
	var errs field.ErrorList
	for i, ss := range ep.Subsets {
		sp := field.NewPath("subsets").Index(i)
		if len(ss.Addresses) == 0 && len(ss.NotReadyAddresses) == 0 {
			errs = append(errs, field.Required(sp, "must specify `addresses` or `notReadyAddresses`"))
		}
		for j, a := range ss.Addresses {
			errs = append(errs, validateEndpointIP(a.IP, sp.Child("addresses").Index(j).Child("ip"))...)
		}
		for j, a := range ss.NotReadyAddresses {
			errs = append(errs, validateEndpointIP(a.IP, sp.Child("notReadyAddresses").Index(j).Child("ip"))...)
		}
		for j, p := range ss.Ports {
			pp := sp.Child("ports").Index(j)
			if len(ss.Ports) > 1 && p.Name == "" {
				errs = append(errs, field.Required(pp.Child("name"), ""))
			}
			for _, msg := range validation.IsValidPortNum(int(p.Port)) {
				errs = append(errs, field.Invalid(pp.Child("port"), p.Port, msg))
			}
			if !sets.New(supportedServiceProtocols...).Has(string(p.Protocol)) {
				errs = append(errs, field.NotSupported(pp.Child("protocol"), p.Protocol, supportedServiceProtocols))
			}
		}
	}
	return errs
}

func validateEndpointIP(ip string, fp *field.Path) field.ErrorList {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return field.ErrorList{field.Invalid(fp, ip, "must be a valid IP address")}
	}
	if a.IsUnspecified() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsMulticast() {
		return field.ErrorList{field.Invalid(fp, ip, "may not be unspecified (0.0.0.0), in the loopback range (127.0.0.0/8, ::1/128), link-local or multicast")}
	}
	return nil
}

// formatEndpoints is kubectl's formatEndpoints: up to three ready
// addresses with their ports, then how many more.
func formatEndpoints(ep *corev1.Endpoints) string {
	if len(ep.Subsets) == 0 {
		return "<none>"
	}
	const most = 3
	var list []string
	more, count := false, 0
	for _, ss := range ep.Subsets {
		if len(ss.Ports) == 0 {
			count += len(ss.Addresses)
			for _, a := range ss.Addresses {
				if len(list) == most {
					more = true
					break
				}
				list = append(list, a.IP)
			}
			continue
		}
		for _, p := range ss.Ports {
			count += len(ss.Addresses)
			for _, a := range ss.Addresses {
				if len(list) == most {
					more = true
					break
				}
				list = append(list, net.JoinHostPort(a.IP, strconv.Itoa(int(p.Port))))
			}
		}
	}
	ret := strings.Join(list, ",")
	if more {
		return fmt.Sprintf("%s + %d more...", ret, count-most)
	}
	return ret
}

// endpointSliceKind is discovery.k8s.io/v1 EndpointSlices, kept by the
// EndpointSlice controller.
func endpointSliceKind() *kind {
	k := &kind{group: "discovery.k8s.io", version: "v1", resource: "endpointslices", singular: "endpointslice", kind: "EndpointSlice", namespaced: true}
	k.new = func() store.Object { return &discoveryv1.EndpointSlice{} }
	k.prepare = func(o store.Object) {
		es := o.(*discoveryv1.EndpointSlice)
		es.TypeMeta = metav1.TypeMeta{Kind: "EndpointSlice", APIVersion: "discovery.k8s.io/v1"}
		defaultEndpointSlice(es)
	}
	k.prepareUpdate = func(o, _ store.Object) { defaultEndpointSlice(o.(*discoveryv1.EndpointSlice)) }
	k.validate = func(o store.Object) error { return fieldErrs(validateEndpointSlice(o.(*discoveryv1.EndpointSlice))) }
	k.validateUpdate = func(o, old store.Object) error {
		return fieldErrs(apivalidation.ValidateImmutableField(o.(*discoveryv1.EndpointSlice).AddressType, old.(*discoveryv1.EndpointSlice).AddressType, field.NewPath("addressType")))
	}
	k.fields = func(o store.Object) fields.Set { return metaFields(o, true) }
	// printEndpointSlice's columns.
	k.columns = []metav1.TableColumnDefinition{
		{Name: "Name", Type: "string", Format: "name", Description: metav1.ObjectMeta{}.SwaggerDoc()["name"]},
		{Name: "AddressType", Type: "string", Description: discoveryv1.EndpointSlice{}.SwaggerDoc()["addressType"]},
		{Name: "Ports", Type: "string", Description: discoveryv1.EndpointSlice{}.SwaggerDoc()["ports"]},
		{Name: "Endpoints", Type: "string", Description: discoveryv1.EndpointSlice{}.SwaggerDoc()["endpoints"]},
		{Name: "Age", Type: "string", Description: metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]},
	}
	k.cells = func(o store.Object) []any {
		es := o.(*discoveryv1.EndpointSlice)
		var ports, addrs []string
		for _, p := range es.Ports {
			switch {
			case p.Port != nil:
				ports = append(ports, strconv.Itoa(int(*p.Port)))
			case p.Name != nil:
				ports = append(ports, *p.Name)
			default:
				ports = append(ports, "*")
			}
		}
		for _, e := range es.Endpoints {
			addrs = append(addrs, e.Addresses...)
		}
		return []any{es.Name, string(es.AddressType), listWithMore(ports), listWithMore(addrs), age(es.CreationTimestamp)}
	}
	return k
}

// listWithMore is kubectl's listWithMoreString over the first three.
func listWithMore(list []string) string {
	const most = 3
	if len(list) > most {
		return fmt.Sprintf("%s + %d more...", strings.Join(list[:most], ","), len(list)-most)
	}
	if len(list) == 0 {
		return "<unset>"
	}
	return strings.Join(list, ",")
}

// defaultEndpointSlice is discovery/v1's defaults: TCP, and the
// endpoints' conditions left as the writer set them.
func defaultEndpointSlice(es *discoveryv1.EndpointSlice) {
	for i := range es.Ports {
		if es.Ports[i].Protocol == nil {
			tcp := corev1.ProtocolTCP
			es.Ports[i].Protocol = &tcp
		}
		if es.Ports[i].Name == nil {
			es.Ports[i].Name = ptr("")
		}
	}
}

// validateEndpointSlice is pkg/apis/discovery/validation's rules for an
// IPv4 or IPv6 slice.
func validateEndpointSlice(es *discoveryv1.EndpointSlice) field.ErrorList {
	var errs field.ErrorList
	types := []string{string(discoveryv1.AddressTypeFQDN), string(discoveryv1.AddressTypeIPv4), string(discoveryv1.AddressTypeIPv6)}
	if !sets.New(types...).Has(string(es.AddressType)) {
		errs = append(errs, field.NotSupported(field.NewPath("addressType"), es.AddressType, types))
	}
	if len(es.Endpoints) > 1000 {
		errs = append(errs, field.TooMany(field.NewPath("endpoints"), len(es.Endpoints), 1000))
	}
	for i, e := range es.Endpoints {
		ap := field.NewPath("endpoints").Index(i).Child("addresses")
		if len(e.Addresses) == 0 {
			errs = append(errs, field.Required(ap, "must contain at least 1 address"))
		} else if len(e.Addresses) > 100 {
			errs = append(errs, field.TooMany(ap, len(e.Addresses), 100))
		}
		for j, a := range e.Addresses {
			switch es.AddressType {
			case discoveryv1.AddressTypeIPv4:
				if ip, err := netip.ParseAddr(a); err != nil || !ip.Is4() {
					errs = append(errs, field.Invalid(ap.Index(j), a, "must be a valid IPv4 address"))
				}
			case discoveryv1.AddressTypeIPv6:
				if ip, err := netip.ParseAddr(a); err != nil || !ip.Is6() {
					errs = append(errs, field.Invalid(ap.Index(j), a, "must be a valid IPv6 address"))
				}
			case discoveryv1.AddressTypeFQDN:
				for _, msg := range validation.IsFullyQualifiedDomainName(ap.Index(j), a) {
					errs = append(errs, msg)
				}
			}
		}
	}
	if len(es.Ports) > 20000 {
		errs = append(errs, field.TooMany(field.NewPath("ports"), len(es.Ports), 20000))
	}
	names := sets.New[string]()
	for i, p := range es.Ports {
		pp := field.NewPath("ports").Index(i)
		if p.Name != nil && *p.Name != "" {
			for _, msg := range validation.IsDNS1123Label(*p.Name) {
				errs = append(errs, field.Invalid(pp.Child("name"), *p.Name, msg))
			}
		}
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		if names.Has(name) {
			errs = append(errs, field.Duplicate(pp.Child("name"), name))
		}
		names.Insert(name)
		if p.Protocol != nil && !sets.New(supportedServiceProtocols...).Has(string(*p.Protocol)) {
			errs = append(errs, field.NotSupported(pp.Child("protocol"), *p.Protocol, supportedServiceProtocols))
		}
		if p.Port != nil {
			for _, msg := range validation.IsValidPortNum(int(*p.Port)) {
				errs = append(errs, field.Invalid(pp.Child("port"), *p.Port, msg))
			}
		}
	}
	return errs
}

// maxClientIPAffinitySeconds is core's MaxClientIPServiceAffinitySeconds
// (a day), which core/v1 does not export.
const maxClientIPAffinitySeconds = 86400
