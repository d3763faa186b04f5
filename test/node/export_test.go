package node

// Cgroups gives the external tests the cgroup directories a node made.
func Cgroups(n *Node) []string { return n.cgs }
