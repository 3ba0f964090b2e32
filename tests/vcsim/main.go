// Command vcsim serves the govmomi vSphere simulator for photonkick's driver tests.
//
// It prints one JSON line ({"url","host","port","cert"}) once it listens and runs until
// SIGINT/SIGTERM or until its standard input is closed, so a test run that dies cannot
// leave it behind. Built in GOPATH mode against Debian's golang-github-vmware-govmomi-dev.
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
)

type ready struct {
	URL  string `json:"url"`
	Host string `json:"host"`
	Port string `json:"port"`
	Cert string `json:"cert"`
}

func main() {
	listen := flag.String("l", "127.0.0.1:0", "listen address (port 0: the kernel picks a free port)")
	esx := flag.Bool("esx", false, "standalone ESXi model (ha-datacenter) instead of vCenter")
	useTLS := flag.Bool("tls", false, "serve https with a self-signed certificate generated at start")
	auth := flag.String("auth", "", "user:password to accept (default: any non-empty pair)")
	delay := flag.Int("delay", 0, "milliseconds added to every SOAP call")
	disable := flag.String("disable-method", "", "comma-separated API methods (ReconfigVM_Task) "+
		"that fail with MethodDisabled on every VM a client creates")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("vcsim: ")

	model := simulator.VPX()
	if *esx {
		model = simulator.ESX()
	}
	model.Machine = 0
	model.Autostart = false
	model.DelayConfig.Delay = *delay
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	defer model.Remove()

	service := model.Service
	service.Listen = &url.URL{Host: *listen}
	if *auth != "" {
		user, password, ok := strings.Cut(*auth, ":")
		if !ok {
			log.Fatalf("-auth %q: want user:password", *auth)
		}
		service.Listen.User = url.UserPassword(user, password)
	}
	var pem string
	if *useTLS {
		cert, certPEM, err := selfSigned()
		if err != nil {
			log.Fatal(err)
		}
		service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		pem = certPEM
	}
	if *disable != "" {
		simulator.Map.AddHandler(newMethodDisabler(strings.Split(*disable, ",")))
	}

	server := service.NewServer()
	defer server.Close()
	sdk := *server.URL
	sdk.User = nil
	// No request can have arrived yet: nobody knows the port before the line below.
	server.Config.Handler = requireSession(&sdk, server.Config.Handler)

	line, err := json.Marshal(ready{URL: sdk.String(), Host: sdk.Hostname(), Port: sdk.Port(), Cert: pem})
	if err != nil {
		log.Fatal(err)
	}
	os.Stdout.Write(append(line, '\n'))

	done := make(chan struct{})
	go publishExtraConfig(50*time.Millisecond, done)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-signals:
	case <-done:
	}
}
