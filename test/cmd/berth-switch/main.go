// Command berth-switch measures issue 12's selector switch inside a test
// node: it patches a Service's selector over berthd's socket, alternately
// to each of -values, and after each patch's response asks the Service's
// URL over a new connection per request until -settle answers in a row
// come from the new selection (the first word of the body starts with the
// value). A switch's latency is from the patch's response to the start of
// the first request of that run. It prints a JSON report.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"
)

type report struct {
	LatenciesMS []float64 `json:"latenciesMs"`
	P50MS       float64   `json:"p50Ms"`
	P99MS       float64   `json:"p99Ms"`
	Requests    int       `json:"requests"`
	Failures    int       `json:"failures"`
	Errors      []string  `json:"errors,omitempty"`
}

func main() {
	socket := flag.String("socket", "/run/berth/berth.sock", "berthd's socket")
	ns := flag.String("namespace", "", "the Service's namespace")
	name := flag.String("service", "", "the Service")
	label := flag.String("label", "version", "the selector's label that is switched")
	values := flag.String("values", "blue,green", "the label's values, in turn; the Service selects the first")
	url := flag.String("url", "", "the URL to ask (the Service's cluster IP)")
	switches := flag.Int("switches", 20, "how many switches")
	settle := flag.Int("settle", 20, "answers in a row from the new selection that end a switch")
	flag.Parse()
	if *ns == "" || *name == "" || *url == "" {
		fmt.Fprintln(os.Stderr, "usage: berth-switch -namespace NS -service NAME -url URL")
		os.Exit(2)
	}
	api := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", *socket)
		},
	}}
	web := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	vals := strings.Split(*values, ",")
	var rep report
	for i := 0; i < *switches; i++ {
		want := vals[(i+1)%len(vals)]
		patched, err := patch(api, *ns, *name, *label, want)
		if err != nil {
			fail(err)
		}
		var runStart time.Time
		for inRow := 0; inRow < *settle; {
			if time.Since(patched) > time.Minute {
				fail(fmt.Errorf("switch %d to %s: not settled after a minute", i, want))
			}
			start := time.Now()
			answer, err := ask(web, *url)
			rep.Requests++
			switch {
			case err != nil:
				rep.Failures++
				if len(rep.Errors) < 20 {
					rep.Errors = append(rep.Errors, err.Error())
				}
				inRow = 0
			case strings.HasPrefix(answer, want):
				if inRow == 0 {
					runStart = start
				}
				inRow++
			default:
				inRow = 0
			}
		}
		rep.LatenciesMS = append(rep.LatenciesMS, float64(max(runStart.Sub(patched), 0).Microseconds())/1000)
	}
	sorted := append([]float64(nil), rep.LatenciesMS...)
	sort.Float64s(sorted)
	rep.P50MS = sorted[(len(sorted)-1)/2]
	rep.P99MS = sorted[(len(sorted)*99+99)/100-1]
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		os.Exit(1)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "berth-switch:", err)
	os.Exit(1)
}

// patch sets the Service's selector label to value and returns when the
// response came.
func patch(api *http.Client, ns, name, label, value string) (time.Time, error) {
	body, _ := json.Marshal(map[string]any{"spec": map[string]any{"selector": map[string]string{label: value}}})
	req, err := http.NewRequest(http.MethodPatch, "http://berthd/api/v1/namespaces/"+ns+"/services/"+name, bytes.NewReader(body))
	if err != nil {
		return time.Time{}, err
	}
	req.Header.Set("Content-Type", "application/strategic-merge-patch+json")
	resp, err := api.Do(req)
	if err != nil {
		return time.Time{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return time.Time{}, fmt.Errorf("patch: %s: %s", resp.Status, b)
	}
	return time.Now(), nil
}

// ask GETs url and returns the body's first word.
func ask(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "", fmt.Errorf("empty body")
	}
	return f[0], nil
}
