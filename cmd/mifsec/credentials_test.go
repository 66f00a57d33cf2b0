package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mifsec/mifsec/internal/testpki"
)

func TestReadClientPSKs(t *testing.T) {
	const k1, k2, k3 = "key one of enough length", "key two of enough length", "a third key, long enough"
	for _, tc := range []struct {
		name, file string
		want       map[string]string
		err        string // part of the error, "" for none
	}{
		{name: "spaces, tabs, comments", file: "# clients\nclient.example  " + k1 + "\n\n\troad@example.org\t" + k2 + "  \n@laptop.example " + k3 + "\n",
			want: map[string]string{"client.example": k1, "road@example.org": k2, "laptop.example": k3}},
		{name: "CRLF", file: "a.example " + k1 + "\r\nb.example " + k2 + "\r\n", want: map[string]string{"a.example": k1, "b.example": k2}},
		{name: "address identity", file: "192.0.2.7 " + k3 + "\n", want: map[string]string{"192.0.2.7": k3}},
		{name: "no key", file: "a.example " + k1 + "\nb.example\n", err: ":2: want an identity and its key"},
		{name: "same identity twice", file: "a.example " + k1 + "\n@a.example " + k2 + "\n", err: ":2: a second key for a.example"},
		{name: "bad identity", file: "@ " + k1 + "\n", err: ":1:"},
		{name: "empty", file: "# nobody\n", err: "names no client"},
		{name: "short key", file: "a.example " + k1 + "\nb.example k2 too short\n", err: ":2: b.example: the pre-shared key has 12 bytes, at least 16"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "clients")
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := readClientPSKs(path)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one with %q", err, tc.err)
				}
				if strings.Contains(err.Error(), k1) || strings.Contains(err.Error(), k2) || strings.Contains(err.Error(), "too short") {
					t.Fatalf("the error shows a key: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d clients, want %d", len(got), len(tc.want))
			}
			for id, key := range tc.want {
				if string(got[id]) != key {
					t.Errorf("key of %s is %q, want %q", id, got[id], key)
				}
			}
		})
	}
	if _, err := readClientPSKs(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing file was accepted")
	}
}

// TestSecretFilesMustBePrivate: a pre-shared key file, a per-client key
// file and a static ESP key file that the group or others may read are
// refused with an error naming the file and its mode; a PSK shorter than
// 16 bytes is refused without showing it.
func TestSecretFilesMustBePrivate(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return path
	}
	const psk = "a secret of enough length"
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o620, 0o660} {
		path := write(fmt.Sprintf("psk-%o", mode), psk+"\n", mode)
		_, err := readPSKFile(path)
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), fmt.Sprintf("mode %04o", mode)) {
			t.Errorf("PSK file of mode %04o: %v, want an error naming the file and its mode", mode, err)
		}
		if _, err := readClientPSKs(write(fmt.Sprintf("clients-%o", mode), "a.example "+psk+"\n", mode)); err == nil {
			t.Errorf("client PSK file of mode %04o accepted", mode)
		}
		if _, err := readSecretFile(write(fmt.Sprintf("key-%o", mode), "00", mode)); err == nil {
			t.Errorf("key file of mode %04o accepted", mode)
		}
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		got, err := readPSKFile(write(fmt.Sprintf("ok-%o", mode), psk+"\r\n", mode))
		if err != nil || string(got) != psk {
			t.Errorf("PSK file of mode %04o: %q, %v", mode, got, err)
		}
	}
	short := write("short", "fifteen bytes!!\n", 0o600)
	_, err := readPSKFile(short)
	if err == nil || !strings.Contains(err.Error(), "15 bytes, at least 16") || strings.Contains(err.Error(), "fifteen") {
		t.Errorf("a 15-byte PSK: %v", err)
	}
	if _, err := readPSKFile(write("sixteen", "sixteen bytes!!!\n", 0o600)); err != nil {
		t.Errorf("a 16-byte PSK: %v", err)
	}
	if _, err := readPSKFile(dir); err == nil {
		t.Error("a directory was read as a PSK file")
	}
}

// TestPrivateKeyFileMustBePrivate: --key naming a private key that its
// group or others may read is refused before anything is created.
func TestPrivateKeyFileMustBePrivate(t *testing.T) {
	pki, err := testpki.Generate(t.TempDir(), testpki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"mifsec", "connect", "--gateway", "192.0.2.2", "--local-id", "client.example", "--remote-id", "gw.example",
		"--cert", pki.Client.CertFile, "--key", pki.Client.KeyFile, "--tun", "mpk-refuse"}
	if err := os.Chmod(pki.Client.KeyFile, 0o640); err != nil {
		t.Fatal(err)
	}
	err = newApp().Run(args)
	if err == nil || !strings.Contains(err.Error(), "--key: "+pki.Client.KeyFile+" has mode 0640") {
		t.Fatalf("a private key of mode 0640: %v", err)
	}
}
