package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/cli-runtime/pkg/printers"
	"k8s.io/kubectl/pkg/util/templates"

	"github.com/berth-dev/berth/api/berthv1"
	"github.com/berth-dev/berth/api/client"
)

// berthClient is the client of berth's own endpoints, which only the socket
// serves.
func berthClient(flags *client.Flags, verb string) (client.Berth, error) {
	if !flags.SocketMode() {
		return client.Berth{}, fmt.Errorf("berth %s asks berthd on its socket: not with --kubeconfig or --server: %w", verb, errdefs.ErrInvalidArgument)
	}
	return client.Berth{HTTP: client.NewHTTPClient(flags.Socket)}, nil
}

func newImageCmd(flags *client.Flags, streams genericiooptions.IOStreams) *cobra.Command {
	c := &cobra.Command{
		Use:   "image",
		Short: "Pull, list, remove and load the node's images",
		Long: templates.LongDesc(`
			The node's image store: images are judged by the trust policy
			(/etc/berth/policy.json) before any layer is fetched or unpacked.`),
	}
	c.AddCommand(newImagePullCmd(flags, streams), newImageLsCmd(flags, streams), newImageRmCmd(flags, streams), newImageLoadCmd(flags, streams))
	return c
}

func newImagePullCmd(flags *client.Flags, streams genericiooptions.IOStreams) *cobra.Command {
	return &cobra.Command{
		Use:   "pull IMAGE",
		Short: "Pull an image by tag or digest, judged by the trust policy first",
		Example: templates.Examples(`
			berth image pull registry.example:5000/app:1.0
			berth image pull docker.io/library/nginx@sha256:...`),
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			b, err := berthClient(flags, "image pull")
			if err != nil {
				return err
			}
			pr := newProgress(streams.ErrOut, "pulling "+args[0])
			m, err := b.Pull(c.Context(), args[0], pr.update)
			pr.end()
			if err != nil {
				return err
			}
			fmt.Fprintf(streams.Out, "%s: %s (%s)\n", args[0], m.Image.Digest, judgementText(m.Judgement))
			return nil
		},
	}
}

func newImageLoadCmd(flags *client.Flags, streams genericiooptions.IOStreams) *cobra.Command {
	var ref string
	c := &cobra.Command{
		Use:   "load FILE|DIR|-",
		Short: "Load an image from an oci-archive or an OCI image layout",
		Long: templates.LongDesc(`
			Send an oci-archive (a tar of an OCI image layout, as podman save
			--format oci-archive or skopeo copy oci-archive: write it), or an OCI
			image layout directory, to berthd. berthd judges the image by the
			trust policy's oci-archive default (transports["oci-archive"][""],
			else the policy's default) before any layer is unpacked: a policy
			that says nothing about archives refuses them as it refuses
			everything else.`),
		Example: templates.Examples(`
			berth image load app.tar
			berth image load ./layout --ref app:1.0
			skopeo copy docker://nginx oci-archive:/dev/stdout | berth image load -`),
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			b, err := berthClient(flags, "image load")
			if err != nil {
				return err
			}
			r, closeSrc, err := archiveSource(c.Context(), args[0], streams.In)
			if err != nil {
				return err
			}
			defer closeSrc()
			pr := newProgress(streams.ErrOut, "loading "+args[0])
			// berthd answers once it has the whole archive; until then the
			// progress is what has been sent.
			m, err := b.Load(c.Context(), &countingReader{r: r, seen: pr.update}, ref, pr.update)
			pr.end()
			if err != nil {
				return err
			}
			fmt.Fprintf(streams.Out, "loaded %s (%s)\n", m.Image.Digest, judgementText(m.Judgement))
			return nil
		},
	}
	c.Flags().StringVar(&ref, "ref", "", "the image of a layout holding several: its org.opencontainers.image.ref.name annotation or its digest")
	return c
}

// archiveSource opens what `image load` sends: a file as it is, standard
// input, or a layout directory written as a tar on the fly.
func archiveSource(ctx context.Context, arg string, stdin io.Reader) (io.Reader, func(), error) {
	if arg == "-" {
		return stdin, func() {}, nil
	}
	fi, err := os.Stat(arg)
	if err != nil {
		return nil, nil, err
	}
	if !fi.IsDir() {
		f, err := os.Open(arg)
		if err != nil {
			return nil, nil, err
		}
		return f, func() { f.Close() }, nil
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(client.LayoutArchive(arg, pw)) }()
	return pr, func() { pr.Close() }, nil
}

func newImageLsCmd(flags *client.Flags, streams genericiooptions.IOStreams) *cobra.Command {
	var output string
	var quiet bool
	c := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the stored images",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			b, err := berthClient(flags, "image ls")
			if err != nil {
				return err
			}
			list, err := b.Images(c.Context())
			if err != nil {
				return err
			}
			switch {
			case quiet:
				for _, im := range list.Items {
					fmt.Fprintln(streams.Out, im.Digest)
				}
				return nil
			case output == "json":
				enc := json.NewEncoder(streams.Out)
				enc.SetIndent("", "    ")
				return enc.Encode(list)
			case output != "":
				return fmt.Errorf("unable to match a printer suitable for the output format %q, allowed formats are: json: %w", output, errdefs.ErrInvalidArgument)
			}
			tw := printers.GetNewTabWriter(streams.Out)
			fmt.Fprintln(tw, "IMAGE\tDIGEST\tPLATFORM\tLAYERS\tCREATED\tLAST USED")
			for _, im := range list.Items {
				names := im.Refs
				if len(names) == 0 {
					names = []string{"<none>"}
				}
				created := "<unknown>"
				if im.Created != nil {
					created = duration.HumanDuration(time.Since(*im.Created))
				}
				for _, n := range names {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", n, shortDigest(im.Digest), orNone(im.Platform), im.Layers, created, duration.HumanDuration(time.Since(im.LastUsed)))
				}
			}
			return tw.Flush()
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "", "output format: json (default: a table)")
	c.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the digests")
	return c
}

func newImageRmCmd(flags *client.Flags, streams genericiooptions.IOStreams) *cobra.Command {
	return &cobra.Command{
		Use:     "rm IMAGE...",
		Aliases: []string{"remove"},
		Short:   "Remove stored images no container uses",
		Long: templates.LongDesc(`
			Remove images by reference (as pulled), digest, or a digest prefix of
			at least 12 characters. An image a container uses is refused.`),
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			b, err := berthClient(flags, "image rm")
			if err != nil {
				return err
			}
			for _, ref := range args {
				im, err := b.Remove(c.Context(), ref)
				if err != nil {
					return err
				}
				fmt.Fprintf(streams.Out, "removed %s (%s)\n", ref, im.Digest)
			}
			return nil
		},
	}
}

func judgementText(j *berthv1.Judgement) string {
	if j == nil {
		return "no judgement"
	}
	s := "accepted by " + j.Scope
	if j.Rule != "" {
		s += " " + j.Rule
	}
	if j.Reason != "" {
		s += ": " + j.Reason
	}
	return s
}

func shortDigest(d string) string {
	if h, ok := strings.CutPrefix(d, "sha256:"); ok && len(h) > 12 {
		return h[:12]
	}
	return d
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// countingReader tells seen how many bytes were read so far.
type countingReader struct {
	r    io.Reader
	n    int64
	seen func(berthv1.Progress)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.seen(berthv1.Progress{Received: c.n})
	return n, err
}

// progress draws one line on a terminal, redrawn in place; elsewhere
// (a pipe, a log) it prints nothing, so scripts read only the result.
type progress struct {
	w     io.Writer
	what  string
	tty   bool
	drawn bool
	last  time.Time
}

func newProgress(w io.Writer, what string) *progress {
	f, ok := w.(*os.File)
	return &progress{w: w, what: what, tty: ok && term.IsTerminal(int(f.Fd()))}
}

func (p *progress) update(pr berthv1.Progress) {
	if !p.tty || (!pr.Done && time.Since(p.last) < 100*time.Millisecond) {
		return
	}
	p.last = time.Now()
	var line string
	switch {
	case pr.Total > 0:
		line = fmt.Sprintf("%s: %s / %s (%d%%)", p.what, bytesText(pr.Bytes), bytesText(pr.Total), pr.Bytes*100/pr.Total)
	case pr.Received > 0:
		line = fmt.Sprintf("%s: %s sent", p.what, bytesText(pr.Received))
	default:
		return
	}
	fmt.Fprintf(p.w, "\r\033[K%s", line)
	p.drawn = true
}

func (p *progress) end() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
