package logs

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestEntryLine(t *testing.T) {
	for _, tc := range []struct {
		json string
		want string
		ok   bool
	}{
		{`{"MESSAGE":"hello"}`, "hello\n", true},
		{`{"MESSAGE":"tab\there \"q\" \u00e9"}`, "tab\there \"q\" é\n", true},
		{`{"MESSAGE":[255,98,0,10]}`, "\xffb\x00\n\n", true},                         // not UTF-8: bytes
		{`{"MESSAGE":["first",[1,2]]}`, "first\n", true},                             // the field twice
		{`{"MESSAGE":"part","_LINE_BREAK":"line-max"}`, "part", true},                // continues in the next entry
		{`{"MESSAGE":"last","_LINE_BREAK":"eof"}`, "last\n", true},                   // written without a newline
		{`{"MESSAGE":"x","_LINE_BREAK":[108,105,110,101,45,109,97,120]}`, "x", true}, // any encoding of line-max
		{`{"MESSAGE":null}`, "", false},
		{`{}`, "", false},
	} {
		var e entry
		if err := json.Unmarshal([]byte(tc.json), &e); err != nil {
			t.Fatal(err)
		}
		got, ok := e.line()
		if string(got) != tc.want || ok != tc.ok {
			t.Errorf("%s: %q %v, want %q %v", tc.json, got, ok, tc.want, tc.ok)
		}
	}
}

func TestOutput(t *testing.T) {
	e := &entry{Realtime: "1796217038602327", Message: json.RawMessage(`"hello"`)}
	var b bytes.Buffer
	o := newOutput(&b, &corev1.PodLogOptions{Timestamps: true})
	if more, err := o.write(e); !more || err != nil {
		t.Fatal(more, err)
	}
	want := time.UnixMicro(1796217038602327).UTC().Format("2006-01-02T15:04:05") + ".602327000Z hello\n"
	if b.String() != want {
		t.Errorf("timestamped: %q, want %q", b.String(), want)
	}

	b.Reset()
	limit := int64(8)
	o = newOutput(&b, &corev1.PodLogOptions{LimitBytes: &limit})
	more, _ := o.write(e)
	if !more || b.String() != "hello\n" {
		t.Errorf("first line under the limit: %q more=%v", b.String(), more)
	}
	more, _ = o.write(e)
	if more || b.String() != "hello\nhe" || !o.full() {
		t.Errorf("cut at the limit: %q more=%v", b.String(), more)
	}
}

func TestParseShow(t *testing.T) {
	for _, tc := range []struct {
		out     string
		inv     string
		running bool
	}{
		{"LoadState=loaded\nActiveState=active\nSubState=running\nInvocationID=abc\n", "abc", true},
		{"LoadState=loaded\nActiveState=deactivating\nSubState=stop-sigterm\nInvocationID=abc\n", "abc", true},
		{"LoadState=loaded\nActiveState=activating\nSubState=auto-restart\nInvocationID=abc\n", "abc", false},
		{"LoadState=loaded\nActiveState=activating\nSubState=start\nInvocationID=abc\n", "abc", true},
		{"LoadState=loaded\nActiveState=failed\nSubState=failed\nInvocationID=abc\n", "abc", false},
		{"LoadState=not-found\nActiveState=inactive\nSubState=dead\nInvocationID=\n", "", false},
	} {
		s := parseShow(tc.out)
		if s.invocation != tc.inv || s.running() != tc.running {
			t.Errorf("%q: %+v running=%v", tc.out, s, s.running())
		}
	}
}

func TestSelection(t *testing.T) {
	from := time.Unix(1700000000, 500_000_000)
	s := &selection{args: []string{"journalctl", "M=1"}, tail: "5", since: from}
	if got := strings.Join(s.argv(false), " "); got != "journalctl M=1 --lines=5 --since=@1700000000" {
		t.Errorf("tail and since: %s", got)
	}
	s = &selection{args: []string{"journalctl"}}
	if got := strings.Join(s.argv(true), " "); got != "journalctl --lines=all --follow" {
		t.Errorf("follow from the start: %s", got)
	}
	s = &selection{args: []string{"journalctl"}, tail: "5", since: from, cursor: "c1"}
	if got := strings.Join(s.argv(false), " "); got != "journalctl --after-cursor=c1" {
		t.Errorf("resumed: %s", got)
	}
	// keep is the kubelet's: at or after since, to the microsecond.
	s = &selection{since: from}
	for us, want := range map[string]bool{"1700000000499999": false, "1700000000500000": true, "1700000001000000": true} {
		if got := s.keep(&entry{Realtime: us}); got != want {
			t.Errorf("keep %s: %v", us, got)
		}
	}

	now := time.Unix(1800000000, 0)
	secs := int64(60)
	if got := since(&corev1.PodLogOptions{SinceSeconds: &secs}, now); !got.Equal(now.Add(-time.Minute)) {
		t.Errorf("sinceSeconds: %v", got)
	}
	at := metav1.NewTime(now)
	if got := since(&corev1.PodLogOptions{SinceTime: &at}, now); !got.Equal(now) {
		t.Errorf("sinceTime: %v", got)
	}
}
