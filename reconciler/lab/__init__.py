"""The lab: a virtual kitting network in Linux network namespaces, for tests and `kitctl lab`.

A run gets a unique name prefix (`kt<6 hex>-`). Every namespace it makes carries that prefix,
and a record under /run/kitting-lab/ names the process that owns it, so parallel runs never
collide and the leftovers of a crashed run can be found and removed (`netns.cleanup_stale`).

- `netns`: build the network. A "switch" is a namespace holding a Linux bridge; a host is a
  namespace whose NICs (`e0`, `e1`, ...) are veth pairs plugged into switches; a router is a
  host with IPv4 forwarding on, joining the kitting switch to a production one. Addresses
  live only inside these namespaces, in 192.168.100.0/24 (kitting) or 198.18.0.0/15
  (production); nothing is configured or sent in the machine's default namespace.
- `procs`: start real programs inside a namespace, capture their output to files, wait with
  bounded timeouts, and stop them (SIGTERM, then SIGKILL); a registry stops everything it
  started when its block ends, however it ends.
- `probes`: what a simulated PC does and sees: a DHCP lease with a chosen client
  architecture (busybox udhcpc), a TFTP download (tftp-hpa), TCP/UDP/ICMP reachability.
  Their parsers are pure and tested on captured output.
- `tcpprobe`: the small socket program the probes run inside a namespace.

This package imports nothing heavy so that `python -m reconciler.lab.tcpprobe` starts fast.
"""
