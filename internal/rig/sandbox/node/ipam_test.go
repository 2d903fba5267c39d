package node

import (
	"net"
	"testing"
)

func TestIPAMSkipsReservedAddressesAndReuses(t *testing.T) {
	_, n, _ := net.ParseCIDR("10.9.0.0/29") // .0 network, .1 gateway, .7 broadcast
	a := newIPAM(n, net.IPv4(10, 9, 0, 1))
	var got []string
	for {
		ip, err := a.allocate()
		if err != nil {
			break
		}
		got = append(got, ip.String())
	}
	want := []string{"10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"}
	if len(got) != len(want) {
		t.Fatalf("allocated %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("allocated %v, want %v", got, want)
		}
	}
	a.release(net.ParseIP("10.9.0.4"))
	if ip, err := a.allocate(); err != nil || ip.String() != "10.9.0.4" {
		t.Fatalf("after a release: %v %v, want 10.9.0.4", ip, err)
	}
}
