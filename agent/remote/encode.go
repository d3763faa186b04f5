package remote

import (
	"math"
	"sort"
	"strconv"
	"time"

	"github.com/golang/snappy"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protowire"
)

// The remote write 1.0 body is a snappy-compressed (block format)
// prometheus.WriteRequest (prompb/remote.proto, types.proto):
//
//	WriteRequest { repeated TimeSeries timeseries = 1; }
//	TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
//	Label        { string name = 1; string value = 2; }
//	Sample       { double value = 1; int64 timestamp = 2; }  // ms
//
// It is written here with protowire rather than with prompb's generated
// types: those live in the prometheus/prometheus module, whose go.mod
// would bring the whole server's dependency graph for four messages.
// Prometheus 2.42 (Debian's) receives 1.0 only.

type label struct{ name, value string }

type series struct {
	labels []label
	value  float64
	ts     int64
}

// flatten turns gathered families into samples, with Prometheus' series
// names for histograms (_bucket with le, _sum, _count) and summaries
// (quantile, _sum, _count), external labels added (a series' own label
// wins, as Prometheus' external_labels do), labels sorted by name as the
// receiver expects. now stamps the samples that carry no time of their
// own.
func flatten(mfs []*dto.MetricFamily, external map[string]string, now time.Time) []series {
	var out []series
	nowMs := now.UnixMilli()
	for _, mf := range mfs {
		name := mf.GetName()
		for _, m := range mf.Metric {
			ts := nowMs
			if m.TimestampMs != nil {
				ts = m.GetTimestampMs()
			}
			base := make([]label, 0, len(m.Label)+len(external)+2)
			for _, l := range m.Label {
				base = append(base, label{l.GetName(), l.GetValue()})
			}
			add := func(suffix string, v float64, extra ...label) {
				ls := append(append([]label{{"__name__", name + suffix}}, base...), extra...)
				out = append(out, series{labels: withExternal(ls, external), value: v, ts: ts})
			}
			switch {
			case m.Counter != nil:
				add("", m.Counter.GetValue())
			case m.Gauge != nil:
				add("", m.Gauge.GetValue())
			case m.Untyped != nil:
				add("", m.Untyped.GetValue())
			case m.Histogram != nil:
				h := m.Histogram
				for _, b := range h.Bucket {
					add("_bucket", float64(b.GetCumulativeCount()), label{"le", formatFloat(b.GetUpperBound())})
				}
				add("_bucket", float64(h.GetSampleCount()), label{"le", "+Inf"})
				add("_sum", h.GetSampleSum())
				add("_count", float64(h.GetSampleCount()))
			case m.Summary != nil:
				s := m.Summary
				for _, q := range s.Quantile {
					add("", q.GetValue(), label{"quantile", formatFloat(q.GetQuantile())})
				}
				add("_sum", s.GetSampleSum())
				add("_count", float64(s.GetSampleCount()))
			}
		}
	}
	return out
}

func formatFloat(f float64) string {
	if math.IsInf(f, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func withExternal(ls []label, external map[string]string) []label {
	for k, v := range external {
		own := false
		for _, l := range ls {
			own = own || l.name == k
		}
		if !own {
			ls = append(ls, label{k, v})
		}
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].name < ls[j].name })
	return ls
}

// encode is the compressed WriteRequest of ss.
func encode(ss []series) []byte {
	var b, ts, sub []byte
	for _, s := range ss {
		ts = ts[:0]
		for _, l := range s.labels {
			sub = sub[:0]
			sub = protowire.AppendTag(sub, 1, protowire.BytesType)
			sub = protowire.AppendString(sub, l.name)
			sub = protowire.AppendTag(sub, 2, protowire.BytesType)
			sub = protowire.AppendString(sub, l.value)
			ts = protowire.AppendTag(ts, 1, protowire.BytesType)
			ts = protowire.AppendBytes(ts, sub)
		}
		sub = sub[:0]
		sub = protowire.AppendTag(sub, 1, protowire.Fixed64Type)
		sub = protowire.AppendFixed64(sub, math.Float64bits(s.value))
		sub = protowire.AppendTag(sub, 2, protowire.VarintType)
		sub = protowire.AppendVarint(sub, uint64(s.ts))
		ts = protowire.AppendTag(ts, 2, protowire.BytesType)
		ts = protowire.AppendBytes(ts, sub)
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, ts)
	}
	return snappy.Encode(nil, b)
}
