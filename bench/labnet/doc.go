// Package labnet owns the lab's networks and the processes in them:
// network namespaces named after the owning process (Lab, which removes
// what a crashed run left behind), the two-namespace veth Topology of a
// throughput run, the LabNet a scenario describes (a client host with
// several uplinks, each through its own emulated link, a gateway, a
// protected network; the link events applied to it), commands and
// processes started inside a namespace, sockets opened in one, and ICMP
// echo to wait until a tunnel carries traffic. It knows no peer and
// measures nothing.
package labnet
