package testkit

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

// Resolver returns a resolver (for netguard.Policy.Resolver) that knows the names of hosts alone,
// each mapped to its addresses: the Go resolver talks DNS to an in-memory server over net.Pipe,
// so nothing leaves the process. Names are matched in lower case without the trailing dot; others
// do not exist.
func Resolver(hosts map[string][]netip.Addr) *net.Resolver {
	known := map[string][]netip.Addr{}
	for name, addrs := range hosts {
		known[strings.TrimSuffix(strings.ToLower(name), ".")] = addrs
	}
	return &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		client, server := net.Pipe()
		go serveDNS(server, known)
		return client, nil
	}}
}

// serveDNS answers the queries of one connection, framed as over TCP (a length before each).
func serveDNS(c net.Conn, hosts map[string][]netip.Addr) {
	defer c.Close()
	for {
		var n [2]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return
		}
		q := make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		a, err := answerDNS(q, hosts)
		if err != nil {
			return
		}
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(a))), a...)); err != nil {
			return
		}
	}
}

// answerDNS answers query q from hosts: the A or AAAA records of a known name, no record for a
// known name without an address of the family asked for, and "no such name" otherwise.
func answerDNS(q []byte, hosts map[string][]netip.Addr) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		return nil, err
	}
	questions, err := p.AllQuestions()
	if err != nil {
		return nil, err
	}
	head := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired,
		RecursionAvailable: true}
	var records []dnsmessage.Resource
	for _, question := range questions {
		addrs, ok := hosts[strings.TrimSuffix(strings.ToLower(question.Name.String()), ".")]
		if !ok {
			head.RCode = dnsmessage.RCodeNameError
			continue
		}
		for _, a := range addrs {
			rh := dnsmessage.ResourceHeader{Name: question.Name, Class: dnsmessage.ClassINET, TTL: 60}
			switch {
			case question.Type == dnsmessage.TypeA && a.Is4():
				records = append(records, dnsmessage.Resource{Header: rh, Body: &dnsmessage.AResource{A: a.As4()}})
			case question.Type == dnsmessage.TypeAAAA && a.Is6():
				records = append(records, dnsmessage.Resource{Header: rh, Body: &dnsmessage.AAAAResource{AAAA: a.As16()}})
			}
		}
	}
	b := dnsmessage.NewBuilder(nil, head)
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	for _, question := range questions {
		if err := b.Question(question); err != nil {
			return nil, err
		}
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	for _, r := range records {
		var err error
		switch body := r.Body.(type) {
		case *dnsmessage.AResource:
			err = b.AResource(r.Header, *body)
		case *dnsmessage.AAAAResource:
			err = b.AAAAResource(r.Header, *body)
		}
		if err != nil {
			return nil, err
		}
	}
	return b.Finish()
}
