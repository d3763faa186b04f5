package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/test/imagetest"
)

// daemon starts a host process for the whole test and stops it (SIGTERM,
// then SIGKILL after 10 s) and waits for it when t ends, also on failure.
// Pdeathsig covers a test binary killed by -timeout. Its output goes to
// log, shown when the test failed.
func daemon(t *testing.T, log string, name string, args ...string) {
	t.Helper()
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(log)
			t.Logf("%s's output:\n%s", filepath.Base(name), tail(string(b), 4000))
		}
	})
}

// waitHTTP polls url until it answers 200.
func waitHTTP(t *testing.T, what, url string) {
	t.Helper()
	var last error
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("%s", resp.Status)
		}
		last = err
	}
	t.Fatalf("%s did not come up on %s: %v", what, url, last)
}

// startRegistry runs Debian's docker-registry on the host at addr (the
// private network's host address), plain HTTP, storing under dir.
func startRegistry(t *testing.T, dir, addr string) {
	t.Helper()
	cfg := fmt.Sprintf("version: 0.1\nlog: {level: warn, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: %q}\n", filepath.Join(dir, "data"), addr)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	daemon(t, filepath.Join(dir, "registry.log"), "docker-registry", "serve", filepath.Join(dir, "config.yml"))
	waitHTTP(t, "docker-registry", "http://"+addr+"/v2/")
}

// shopImages pushes the shop's two versions (busybox images that differ in
// their config: blue is web:1, green web:2) and an unsigned one to the
// registry at host, signs the two with a key pair made by cosign in
// keyDir, and returns the unsigned image's reference.
func shopImages(t *testing.T, dir, host, keyDir string) (unsigned string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	layout := filepath.Join(dir, "images")
	tags := map[string]string{"web:1": "1", "web:2": "2", "web:unsigned": "unsigned"}
	for tag, v := range tags {
		img, err := imagetest.BusyboxImage(func(c *v1.Config) { c.Env = append(c.Env, "SHOP_IMAGE="+v) })
		if err != nil {
			t.Fatal(err)
		}
		if _, err := imagetest.WriteLayout(layout, tag, img); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cosign := func(args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, "cosign", args...)
		cmd.Dir = keyDir
		// An empty password, and no home of the host's: cosign keeps
		// sigstore's TUF cache under $HOME.
		cmd.Env = append(os.Environ(), "COSIGN_PASSWORD=", "HOME="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("cosign %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	cosign("generate-key-pair")
	for tag := range tags {
		dst := host + "/shop/" + tag
		run(t, ctx, "skopeo", "copy", "--quiet", "--dest-tls-verify=false", "oci:"+layout+":"+tag, "docker://"+dst)
		if tag == "web:unsigned" {
			unsigned = dst
			continue
		}
		digest := strings.TrimSpace(run(t, ctx, "skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", "docker://"+dst))
		// No transparency log: the private network has no way out, and
		// berth's keyed policy does not ask for one.
		cosign("sign", "--key", filepath.Join(keyDir, "cosign.key"), "--tlog-upload=false", "--allow-http-registry", "--yes",
			strings.TrimSuffix(dst, ":"+strings.SplitN(tag, ":", 2)[1])+"@"+digest)
	}
	return unsigned
}

// startPrometheus runs Debian's Prometheus on the host at addr as a
// remote write receiver only (no scrape jobs), storing under dir.
func startPrometheus(t *testing.T, dir, addr string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte("global: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	daemon(t, filepath.Join(dir, "prometheus.log"), "prometheus",
		"--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--web.enable-remote-write-receiver", "--log.level=warn")
	waitHTTP(t, "prometheus", "http://"+addr+"/-/ready")
}

// sample is one series of an instant query's vector.
type sample struct {
	Metric map[string]string
	Value  float64
}

// promQuery runs an instant query at time at.
func promQuery(addr, query string, at time.Time) ([]sample, error) {
	var result []struct {
		Metric map[string]string
		Value  [2]any
	}
	if err := promAPI(addr, query, at, "vector", &result); err != nil {
		return nil, err
	}
	var out []sample
	for _, x := range result {
		s, _ := x.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %v", query, x.Value)
		}
		out = append(out, sample{Metric: x.Metric, Value: v})
	}
	return out, nil
}

// rangeSeries is one series of a range vector: its raw samples.
type rangeSeries struct {
	Metric map[string]string
	Values []point
}

// promRange evaluates a range vector selector (raw samples) at time at.
func promRange(addr, query string, at time.Time) ([]rangeSeries, error) {
	var result []struct {
		Metric map[string]string
		Values [][2]any
	}
	if err := promAPI(addr, query, at, "matrix", &result); err != nil {
		return nil, err
	}
	var out []rangeSeries
	for _, x := range result {
		s := rangeSeries{Metric: x.Metric}
		for _, p := range x.Values {
			ts, _ := p[0].(float64)
			vs, _ := p[1].(string)
			v, err := strconv.ParseFloat(vs, 64)
			if err != nil {
				return nil, fmt.Errorf("query %s: sample %v", query, p)
			}
			s.Values = append(s.Values, point{time.UnixMilli(int64(math.Round(ts * 1000))), v})
		}
		out = append(out, s)
	}
	return out, nil
}

// promAPI runs query at time at through Prometheus' /api/v1/query and
// decodes its data.result into result, which must be of resultType.
func promAPI(addr, query string, at time.Time, resultType string, result any) error {
	q := url.Values{"query": {query}, "time": {strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)}}
	resp, err := http.Get("http://" + addr + "/api/v1/query?" + q.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r struct {
		Status string
		Error  string
		Data   struct {
			ResultType string
			Result     json.RawMessage
		}
	}
	if err := json.Unmarshal(b, &r); err != nil || r.Status != "success" || r.Data.ResultType != resultType {
		return fmt.Errorf("query %s: %v %s: %s", query, err, r.Error, b)
	}
	if err := json.Unmarshal(r.Data.Result, result); err != nil {
		return fmt.Errorf("query %s: %v: %s", query, err, b)
	}
	return nil
}

// run runs a host command and returns its output, failing t on an error.
func run(t *testing.T, ctx context.Context, name string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
