package node

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
)

// ipam hands out pod addresses from the pod range, skipping the network
// address, the gateway and the broadcast address.
type ipam struct {
	mu      sync.Mutex
	network *net.IPNet
	gateway net.IP
	used    map[uint32]bool
	next    uint32
}

func newIPAM(network *net.IPNet, gateway net.IP) *ipam {
	return &ipam{network: network, gateway: gateway.To4(), used: map[uint32]bool{}}
}

func (a *ipam) allocate() (net.IP, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	base := binary.BigEndian.Uint32(a.network.IP.To4())
	ones, bits := a.network.Mask.Size()
	size := uint32(1) << (bits - ones)
	gw := binary.BigEndian.Uint32(a.gateway)
	// Round-robin, so that a pod recreated at once gets a new address and
	// no client mistakes it for the old one.
	for i := uint32(0); i < size; i++ {
		off := (a.next + i) % size
		ip := base + off
		if off == 0 || off == size-1 || ip == gw || a.used[ip] {
			continue
		}
		a.used[ip] = true
		a.next = off + 1
		out := make(net.IP, 4)
		binary.BigEndian.PutUint32(out, ip)
		return out, nil
	}
	return nil, fmt.Errorf("the pod range %s is full", a.network)
}

func (a *ipam) release(ip net.IP) {
	if ip4 := ip.To4(); ip4 != nil {
		a.mu.Lock()
		delete(a.used, binary.BigEndian.Uint32(ip4))
		a.mu.Unlock()
	}
}
