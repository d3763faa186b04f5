// Package berthv1 is the wire form of berth's own endpoints on berthd's
// socket, under /berth/v1/: what `berth image` and `berth plan` send and
// receive where kubectl has no verb. The Kubernetes API is served beside
// them, unchanged. These endpoints are for writers (root and group berth,
// api/authz); errors are metav1.Status bodies as on the Kubernetes API.
package berthv1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Paths of the endpoints.
const (
	// ImagesPath: GET lists the stored images (ImageList); DELETE with
	// ?ref= removes one (the removed Image).
	ImagesPath = "/berth/v1/images"
	// PullPath: POST with ?ref= pulls an image; the answer is a stream of
	// Messages (ContentTypeStream).
	PullPath = "/berth/v1/images/pull"
	// LoadPath: POST with an oci-archive (the tar of an OCI image layout)
	// as the body and an optional ?ref= choosing the image of a layout that
	// holds several; the answer is a stream of Messages.
	LoadPath = "/berth/v1/images/load"
	// PlanPath: POST with a Pod (JSON) as the body; the answer is the
	// units and OCI specs its containers would get, as text.
	PlanPath = "/berth/v1/plan"

	// ContentTypeStream is a stream of JSON Messages, one per line.
	ContentTypeStream = "application/x-ndjson"
)

// Image is a stored image.
type Image struct {
	// Digest is the manifest digest (what registries and signatures name).
	Digest string `json:"digest"`
	// Refs are the references it was pulled as (none for a loaded image).
	Refs []string `json:"refs,omitempty"`
	// Platform is the config's os/architecture[/variant].
	Platform string `json:"platform,omitempty"`
	// Created is the image config's creation time, if it has one.
	Created *time.Time `json:"created,omitempty"`
	// Layers counts its layers.
	Layers   int       `json:"layers"`
	Stored   time.Time `json:"stored"`
	LastUsed time.Time `json:"lastUsed"`
}

// ImageList is the answer of GET ImagesPath.
type ImageList struct {
	Items []Image `json:"items"`
}

// Progress is how a pull or load goes.
type Progress struct {
	// Received is the bytes of the archive received so far (load).
	Received int64 `json:"received,omitempty"`
	// Layer is the compressed layer digest; LayerBytes of LayerTotal
	// stored so far; Bytes of Total for all layers.
	Layer      string `json:"layer,omitempty"`
	LayerBytes int64  `json:"layerBytes,omitempty"`
	LayerTotal int64  `json:"layerTotal,omitempty"`
	Bytes      int64  `json:"bytes,omitempty"`
	Total      int64  `json:"total,omitempty"`
	Done       bool   `json:"done,omitempty"`
	Cached     bool   `json:"cached,omitempty"`
}

// Judgement is the trust policy's verdict on an image.
type Judgement struct {
	Allowed bool   `json:"allowed"`
	Scope   string `json:"scope"`
	Rule    string `json:"rule,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// Message is one line of a streamed answer: Progress lines, then exactly
// one final line with either the Image (and the Judgement that admitted it)
// or the Status of the failure.
type Message struct {
	Progress  *Progress      `json:"progress,omitempty"`
	Image     *Image         `json:"image,omitempty"`
	Judgement *Judgement     `json:"judgement,omitempty"`
	Status    *metav1.Status `json:"status,omitempty"`
}
