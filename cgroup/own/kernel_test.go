// An external test package: test/testenv, the tier gate, imports own.
package own_test

import (
	"os"
	"testing"

	"github.com/berth-dev/berth/cgroup/own"
	"github.com/berth-dev/berth/test/testenv"
)

// The real file of this process's own memory cgroup parses.
func TestOwnKillsReadsTheKernel(t *testing.T) {
	_, err := os.Stat(own.Root)
	testenv.Require(t, err == nil, "no cgroupfs at "+own.Root)
	if _, err := own.OOMKills(); err != nil {
		t.Fatal(err)
	}
}
