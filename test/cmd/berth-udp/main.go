// Command berth-udp is the tests' UDP peer: a server that answers every
// datagram with a fixed text, and a client that asks once from a fixed
// source port (the same conntrack flow each time, as a resolver or a
// statsd sender keeps) and prints the answer. Busybox has no UDP server.
//
//	berth-udp -serve :5353 -answer blue
//	berth-udp -ask 10.86.0.53:53 -from 40000
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	serve := flag.String("serve", "", "address to answer on")
	answer := flag.String("answer", "", "text every datagram is answered with")
	ask := flag.String("ask", "", "address to ask")
	from := flag.Int("from", 0, "source port of the question")
	flag.Parse()
	var err error
	switch {
	case *serve != "":
		err = run(*serve, *answer)
	case *ask != "":
		err = query(*ask, *from)
	default:
		err = fmt.Errorf("-serve or -ask")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "berth-udp:", err)
		os.Exit(1)
	}
}

func run(addr, answer string) error {
	c, err := net.ListenPacket("udp4", addr)
	if err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for {
		_, peer, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		if _, err := c.WriteTo([]byte(answer), peer); err != nil {
			fmt.Fprintln(os.Stderr, "berth-udp:", err)
		}
	}
}

func query(addr string, from int) error {
	raddr, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return err
	}
	c, err := net.DialUDP("udp4", &net.UDPAddr{Port: from}, raddr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	if _, err := c.Write([]byte("?")); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	fmt.Println(string(buf[:n]))
	return nil
}
