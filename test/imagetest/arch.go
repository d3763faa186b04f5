package imagetest

import "runtime"

func runtimeArch() string { return runtime.GOARCH }
