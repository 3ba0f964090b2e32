package main

// Additions that bring the simulator closer to a real host for the behaviour the tests check.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// selfSigned makes a fresh P-256 certificate for localhost, so every start presents a
// different certificate (the simulator's built-in one is a fixed 1024-bit RSA key).
func selfSigned() (tls.Certificate, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		return tls.Certificate{}, "", err
	}
	now := time.Now()
	template := x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "localhost", Organization: []string{"vcsim"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, &template, &template, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, string(certPEM), nil
}

// requireSession refuses /folder requests without a logged-in session cookie, as a real
// host does (the simulator's own handler checks nothing).
func requireSession(sdk *url.URL, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/folder/") {
			cookie, err := r.Cookie(soap.SessionCookieName)
			if err != nil || !sessionActive(r.Context(), sdk, cookie.Value) {
				http.Error(w, "no valid vmware_soap_session cookie", http.StatusUnauthorized)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// sessionActive asks the simulator itself whether the session key is logged in.
func sessionActive(ctx context.Context, sdk *url.URL, key string) bool {
	client := soap.NewClient(sdk, true)
	client.Jar.SetCookies(sdk, []*http.Cookie{{Name: soap.SessionCookieName, Value: key}})
	c, err := vim25.NewClient(ctx, client)
	if err != nil {
		return false
	}
	var sm mo.SessionManager
	err = mo.RetrieveProperties(ctx, c, c.ServiceContent.PropertyCollector,
		*c.ServiceContent.SessionManager, &sm)
	return err == nil && sm.CurrentSession != nil
}

// methodDisabler marks methods as disabled on each VM as it is created, so a test can make
// a step after CreateVM fail on demand.
type methodDisabler struct {
	methods []string
}

func newMethodDisabler(apiNames []string) *methodDisabler {
	d := &methodDisabler{}
	for _, name := range apiNames {
		// The simulator compares against its Go method names: ReconfigVM_Task -> ReconfigVMTask.
		d.methods = append(d.methods, strings.Replace(strings.TrimSpace(name), "_Task", "Task", 1))
	}
	return d
}

func (d *methodDisabler) Reference() types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "PhotonkickTestHook", Value: "method-disabler"}
}

func (d *methodDisabler) PutObject(obj mo.Reference) {
	if vm, ok := obj.(*simulator.VirtualMachine); ok {
		vm.DisabledMethod = append(vm.DisabledMethod, d.methods...)
	}
}

func (d *methodDisabler) UpdateObject(mo.Reference, []types.PropertyChange) {}

func (d *methodDisabler) RemoveObject(types.ManagedObjectReference) {}

// publishExtraConfig reports each VM's config.extraConfig to property collectors whenever it
// changes, as a real host does; the simulator stores ExtraConfig edits without telling them.
// Its edits only ever append, so a longer list is a changed one.
func publishExtraConfig(interval time.Duration, done <-chan struct{}) {
	published := map[types.ManagedObjectReference]int{}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-done:
			return
		case <-ticker.C:
		}
		for _, entity := range simulator.Map.All("VirtualMachine") {
			vm, ok := entity.(*simulator.VirtualMachine)
			if !ok {
				continue
			}
			simulator.Map.WithLock(vm, func() {
				ref := vm.Reference()
				if vm.Config == nil || published[ref] == len(vm.Config.ExtraConfig) {
					return
				}
				published[ref] = len(vm.Config.ExtraConfig)
				extra := append([]types.BaseOptionValue(nil), vm.Config.ExtraConfig...)
				simulator.Map.Update(vm, []types.PropertyChange{{Name: "config.extraConfig", Val: extra}})
			})
		}
	}
}
