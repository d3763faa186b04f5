package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/berth-dev/berth/agent/store"
)

// Logs reads a container's output for the pods/log subresource
// (agent/logs.Journal): with the kubelet's semantics of opts, written to w
// as the container wrote it. Errors before the first byte is written
// become the request's Status; the kubelet's own refusals (no previous
// run) are errdefs.ErrInvalidArgument with the kubelet's text.
type Logs interface {
	ContainerLogs(ctx context.Context, pod *corev1.Pod, container string, opts *corev1.PodLogOptions, w io.Writer) error
}

// logParams decodes PodLogOptions from a query as the apiserver does
// (its ParameterCodec); k8s.io/api has no conversion from url.Values, so
// the one the apiserver generates (pkg/apis/core/v1,
// Convert_url_Values_To_v1_PodLogOptions) is written here with the same
// apimachinery helpers: the same spellings of booleans and numbers are
// accepted and refused.
var logParams = func() runtime.ParameterCodec {
	sch := runtime.NewScheme()
	if err := corev1.AddToScheme(sch); err != nil {
		panic(err)
	}
	if err := sch.AddConversionFunc((*url.Values)(nil), (*corev1.PodLogOptions)(nil), func(a, b any, s conversion.Scope) error {
		return convertPodLogOptions(a.(*url.Values), b.(*corev1.PodLogOptions), s)
	}); err != nil {
		panic(err)
	}
	return runtime.NewParameterCodec(sch)
}()

func convertPodLogOptions(in *url.Values, out *corev1.PodLogOptions, s conversion.Scope) error {
	q := map[string][]string(*in)
	str := func(key string, dst *string) error {
		if v, ok := q[key]; ok && len(v) > 0 {
			return runtime.Convert_Slice_string_To_string(&v, dst, s)
		}
		*dst = ""
		return nil
	}
	flag := func(key string, dst *bool) error {
		if v, ok := q[key]; ok && len(v) > 0 {
			return runtime.Convert_Slice_string_To_bool(&v, dst, s)
		}
		*dst = false
		return nil
	}
	num := func(key string, dst **int64) error {
		if v, ok := q[key]; ok && len(v) > 0 {
			return runtime.Convert_Slice_string_To_Pointer_int64(&v, dst, s)
		}
		*dst = nil
		return nil
	}
	if err := str("container", &out.Container); err != nil {
		return err
	}
	for key, dst := range map[string]*bool{"follow": &out.Follow, "previous": &out.Previous, "timestamps": &out.Timestamps,
		"insecureSkipTLSVerifyBackend": &out.InsecureSkipTLSVerifyBackend} {
		if err := flag(key, dst); err != nil {
			return err
		}
	}
	for key, dst := range map[string]**int64{"sinceSeconds": &out.SinceSeconds, "tailLines": &out.TailLines, "limitBytes": &out.LimitBytes} {
		if err := num(key, dst); err != nil {
			return err
		}
	}
	if v, ok := q["sinceTime"]; ok && len(v) > 0 {
		if err := metav1.Convert_Slice_string_To_Pointer_v1_Time(&v, &out.SinceTime, s); err != nil {
			return err
		}
	} else {
		out.SinceTime = nil
	}
	out.Stream = nil
	if v, ok := q["stream"]; ok && len(v) > 0 {
		var st string
		if err := runtime.Convert_Slice_string_To_string(&v, &st, s); err != nil {
			return err
		}
		out.Stream = &st
	}
	return nil
}

// logOptionsKind names the options in the apiserver's 422.
var logOptionsKind = schema.GroupKind{Kind: "PodLogOptions"}

// validateLogOptions is the apiserver's ValidatePodLogOptions with the
// PodLogsQuerySplitStreams gate off, as in Kubernetes 1.32: journald keeps
// a container's stdout and stderr as one stream, so `stream` is refused as
// the apiserver refuses it without the gate.
func validateLogOptions(o *corev1.PodLogOptions) field.ErrorList {
	var errs field.ErrorList
	if o.TailLines != nil && *o.TailLines < 0 {
		errs = append(errs, field.Invalid(field.NewPath("tailLines"), *o.TailLines, "must be greater than or equal to 0"))
	}
	if o.LimitBytes != nil && *o.LimitBytes < 1 {
		errs = append(errs, field.Invalid(field.NewPath("limitBytes"), *o.LimitBytes, "must be greater than 0"))
	}
	switch {
	case o.SinceSeconds != nil && o.SinceTime != nil:
		errs = append(errs, field.Forbidden(field.NewPath(""), "at most one of `sinceTime` or `sinceSeconds` may be specified"))
	case o.SinceSeconds != nil && *o.SinceSeconds < 1:
		errs = append(errs, field.Invalid(field.NewPath("sinceSeconds"), *o.SinceSeconds, "must be greater than 0"))
	}
	if o.Stream != nil {
		errs = append(errs, field.Forbidden(field.NewPath("stream"), "may not be specified"))
	}
	return errs
}

// logContainer is the apiserver's choice of the container
// (registry/core/pod strategy.go LogLocation): the only one, or the one
// named, which must exist.
func logContainer(pod *corev1.Pod, container string) (string, error) {
	if container == "" {
		switch len(pod.Spec.Containers) {
		case 1:
			return pod.Spec.Containers[0].Name, nil
		case 0:
			return "", apierrors.NewBadRequest(fmt.Sprintf("a container name must be specified for pod %s", pod.Name))
		}
		msg := fmt.Sprintf("a container name must be specified for pod %s, choose one of: [%s]", pod.Name, containerNames(pod.Spec.Containers))
		if len(pod.Spec.InitContainers) > 0 {
			msg += fmt.Sprintf(" or one of the init containers: [%s]", containerNames(pod.Spec.InitContainers))
		}
		return "", apierrors.NewBadRequest(msg)
	}
	for _, c := range pod.Spec.InitContainers {
		if c.Name == container {
			return container, nil
		}
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == container {
			return container, nil
		}
	}
	for _, c := range pod.Spec.EphemeralContainers {
		if c.Name == container {
			return container, nil
		}
	}
	return "", apierrors.NewBadRequest(fmt.Sprintf("container %s is not valid for pod %s", container, pod.Name))
}

func containerNames(cs []corev1.Container) string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.Name
	}
	return strings.Join(names, " ")
}

// logStatusError is the kubelet's refusal for a container whose status has
// no logs to show (kubelet_pods.go validateContainerLogStatus), which the
// apiserver passes on as a 400 with the kubelet's text. berth records no
// containerID in terminated states, so the kubelet's "is terminated" cases
// (a terminated state without one) do not arise: the journal has the run.
func logStatusError(pod *corev1.Pod, container string, previous bool) error {
	var cs *corev1.ContainerStatus
	for _, list := range [][]corev1.ContainerStatus{pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses, pod.Status.EphemeralContainerStatuses} {
		for i := range list {
			if list[i].Name == container {
				cs = &list[i]
				break
			}
		}
		if cs != nil {
			break
		}
	}
	bad := func(format string, args ...any) error { return apierrors.NewBadRequest(fmt.Sprintf(format, args...)) }
	if cs == nil {
		return bad("container %q in pod %q is not available", container, pod.Name)
	}
	st := cs.State
	switch {
	case previous:
		if cs.LastTerminationState.Terminated == nil {
			return bad("previous terminated container %q in pod %q not found", container, pod.Name)
		}
	case st.Running != nil, st.Terminated != nil, cs.LastTerminationState.Terminated != nil:
	case st.Waiting != nil:
		switch st.Waiting.Reason {
		case "ErrImagePull":
			return bad("container %q in pod %q is waiting to start: image can't be pulled", container, pod.Name)
		case "ImagePullBackOff":
			return bad("container %q in pod %q is waiting to start: trying and failing to pull image", container, pod.Name)
		}
		return bad("container %q in pod %q is waiting to start: %v", container, pod.Name, st.Waiting.Reason)
	default:
		return bad("container %q in pod %q is waiting to start - no logs yet", container, pod.Name)
	}
	return nil
}

// podLog serves GET pods/NAME/log as the apiserver and the kubelet do
// together: options decoded and validated, the container chosen, the
// kubelet's status checks, then the output as text/plain, flushed as it
// comes when following.
func (s *Server) podLog(w http.ResponseWriter, r *http.Request, k *kind, ns, name string) {
	gr := schemaGR("", "pods/log")
	if r.Method != http.MethodGet {
		s.writeStatus(w, apierrors.NewMethodNotSupported(gr, strings.ToLower(r.Method)), r)
		return
	}
	opts := &corev1.PodLogOptions{}
	if err := logParams.DecodeParameters(r.URL.Query(), corev1.SchemeGroupVersion, opts); err != nil {
		s.writeStatus(w, apierrors.NewBadRequest(err.Error()), r)
		return
	}
	if errs := validateLogOptions(opts); len(errs) > 0 {
		s.writeStatus(w, apierrors.NewInvalid(logOptionsKind, name, errs), r)
		return
	}
	pod := &corev1.Pod{}
	if err := s.store.Get(store.Resource(k.resource), ns, name, pod); err != nil {
		s.writeStatus(w, toStatus(err, k.gr(), k.gk(), name), r)
		return
	}
	container, err := logContainer(pod, opts.Container)
	if err != nil {
		s.writeStatus(w, toStatus(err, k.gr(), k.gk(), name), r)
		return
	}
	if err := logStatusError(pod, container, opts.Previous); err != nil {
		s.writeStatus(w, toStatus(err, k.gr(), k.gk(), name), r)
		return
	}
	if s.opts.Logs == nil {
		s.writeStatus(w, apierrors.NewServiceUnavailable("container logs are not served by this berthd"), r)
		return
	}
	lw := &logWriter{w: w, flush: opts.Follow, rc: http.NewResponseController(w)}
	err = s.opts.Logs.ContainerLogs(r.Context(), pod, container, opts, lw)
	switch {
	case err != nil && !lw.started:
		s.writeStatus(w, toStatus(err, gr, logOptionsKind, name), r)
	case err != nil && r.Context().Err() == nil:
		// The status line is gone; the kubelet also just ends the stream.
		s.log.Warn("container logs ended early", "namespace", ns, "pod", name, "container", container, "error", err)
	case !lw.started:
		lw.start()
	}
}

// logWriter answers 200 text/plain on the first write, so that an error
// found before any output is still the request's Status; it flushes each
// write while following, as the apiserver's streamer does.
type logWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	flush   bool
	started bool
}

func (l *logWriter) start() {
	l.started = true
	// The apiserver's LocationStreamer answers with this content type.
	l.w.Header().Set("Content-Type", "text/plain")
	l.w.WriteHeader(http.StatusOK)
	if l.flush {
		_ = l.rc.Flush()
	}
}

func (l *logWriter) Write(p []byte) (int, error) {
	if !l.started {
		l.start()
	}
	n, err := l.w.Write(p)
	if err == nil && l.flush {
		err = l.rc.Flush()
	}
	return n, err
}

// subresourceVerbs is what discovery lists for a subresource, as the
// apiserver lists it: pods/log is read only, the streaming (connect)
// subresources are "create" and "get", and the others (status) are parts
// of their object, read and written.
func subresourceVerbs(sub string) []string {
	switch sub {
	case "log":
		return []string{"get"}
	case "exec", "attach", "portforward":
		return []string{"create", "get"}
	}
	return []string{"get", "patch", "update"}
}

// objectSubresources are the subresources that are the kind's object, which
// OpenAPI describes with its schema (status); a log is text, the streaming
// ones are no object either, and a scale is another kind (autoscaling/v1
// Scale), which the documents do not describe yet: kubectl scale does not
// read them.
func objectSubresources(subs []string) []string {
	var out []string
	for _, s := range subs {
		switch s {
		case "log", "exec", "attach", "portforward", "scale":
		default:
			out = append(out, s)
		}
	}
	return out
}
