package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
)

// bridgeAlias is written to the bridge's ifalias: it says which lab owns
// the bridge, so a bridge of the same name that belongs to something else
// is never used or deleted.
func bridgeAlias(id string) string { return "kforge-lab " + id }

// linkExists reports whether a network interface of that name exists.
func linkExists(name string) bool {
	_, err := os.Stat("/sys/class/net/" + name)
	return err == nil
}

func linkAlias(name string) string {
	data, err := os.ReadFile("/sys/class/net/" + name + "/ifalias")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}

// checkBridgeFree fails when the bridge name is taken, or when an address
// of the lab network is already on some interface of this machine.
func checkBridgeFree(name string) error {
	if linkExists(name) {
		if a := linkAlias(name); strings.HasPrefix(a, "kforge-lab ") {
			return fmt.Errorf("bridge %s belongs to another kforge lab (%s); run `kforge lab down --dir` on that lab's folder first", name, a)
		}
		return fmt.Errorf("network interface %s already exists and was not made by a kforge lab; remove it or free the name", name)
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("listing network interfaces: %w", err)
	}
	for _, ifc := range ifs {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && HostNet.Contains(ipFrom(ipn.IP)) {
				return fmt.Errorf("interface %s already has %s, inside the lab network %s; is another lab running?", ifc.Name, ipn, HostNet)
			}
		}
	}
	return nil
}

// createBridge makes the bridge, tags it with the lab's alias, gives it the
// host address and brings it up.
func createBridge(ctx context.Context, name, id string) error {
	steps := [][]string{
		{"link", "add", name, "type", "bridge"},
		{"link", "set", "dev", name, "alias", bridgeAlias(id)},
		{"addr", "add", BridgeAddr.String() + "/" + fmt.Sprint(HostNet.Bits()), "dev", name},
		{"link", "set", "dev", name, "up"},
	}
	for _, s := range steps {
		if _, err := run(ctx, "ip", s...); err != nil {
			return fmt.Errorf("creating bridge %s: %w", name, err)
		}
	}
	return nil
}

// deleteBridge removes the bridge if it exists and carries this lab's
// alias; a bridge of that name without it is left alone.
func deleteBridge(ctx context.Context, name, id string) error {
	if !linkExists(name) {
		return nil
	}
	if a := linkAlias(name); a != bridgeAlias(id) {
		return fmt.Errorf("not removing interface %s: it does not belong to this lab (alias %q)", name, a)
	}
	if _, err := run(ctx, "ip", "link", "del", "dev", name); err != nil {
		return err
	}
	return nil
}

// deleteVeth removes a host's veth if nspawn left it behind (it normally
// goes with the container's network namespace). Only a veth attached to
// this lab's bridge — named bridge and carrying lab id's alias — is
// removed: another lab's host of the same name (or a test's plan) is never
// touched, and a veth that is not ours is no error.
func deleteVeth(ctx context.Context, name, bridge, id string) error {
	if !linkExists(name) {
		return nil
	}
	master, err := os.Readlink("/sys/class/net/" + name + "/master")
	if err != nil || !strings.HasSuffix(master, "/"+bridge) || linkAlias(bridge) != bridgeAlias(id) {
		return nil
	}
	_, err = run(ctx, "ip", "link", "del", "dev", name)
	return err
}

func ipFrom(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip.To4())
	return a
}
