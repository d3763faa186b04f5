package registrytest

import (
	"errors"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

func TestRegistryVariants(t *testing.T) {
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		o    Options
	}{
		{"plain", Options{}},
		{"tls", Options{TLS: true}},
		{"htpasswd", Options{Users: map[string]string{"alice": "s3cret"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Start(t, c.o)
			d := r.Push(t, "test/app:v1", img)
			ref, _ := name.ParseReference(r.Ref("test/app:v1"))
			got, err := remote.Get(ref, r.RemoteOptions()...)
			if err != nil || got.Digest != d {
				t.Fatalf("get %s = %v, %v; want %s", ref, got, err, d)
			}
			if c.o.Users != nil {
				_, err := remote.Get(ref, remote.WithTransport(r.Transport()))
				var te *transport.Error
				if !errors.As(err, &te) || te.StatusCode != http.StatusUnauthorized {
					t.Errorf("anonymous get = %v, want 401", err)
				}
			}
		})
	}
}

func TestMirrorPullsThrough(t *testing.T) {
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	origin := Start(t, Options{})
	d := origin.Push(t, "lib/app:v1", img)
	mirror := Start(t, Options{ProxyRemote: origin.URL})
	front := NewProxy(t, mirror, ProxyOptions{})
	ref, _ := name.ParseReference(front.Host + "/lib/app:v1")
	got, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	if gd, _ := got.Digest(); gd != d {
		t.Fatalf("mirror served %s, want %s", gd, d)
	}
	ls, _ := got.Layers()
	rc, err := ls[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if front.Count("/manifests/v1") == 0 {
		t.Errorf("proxy saw %v, want the manifest fetch", front.Requests())
	}
}
