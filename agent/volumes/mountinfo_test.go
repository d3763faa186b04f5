package volumes

import "testing"

// The kernel escapes space, tab, newline and backslash in mountinfo as
// octal; an escape at the very end of a path counts too.
func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/a/b`:            "/a/b",
		`/with\040space`:  "/with space",
		`/end\040`:        "/end ",
		`/tab\011and\134`: "/tab\tand\\",
		`/not\08`:         `/not\08`,
		`/short\04`:       `/short\04`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}
