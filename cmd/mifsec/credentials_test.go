package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadClientPSKs(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		want       map[string]string
		err        string // part of the error, "" for none
	}{
		{name: "spaces, tabs, comments", file: "# clients\nclient.example  key one\n\n\troad@example.org\tkey two  \n@laptop.example k3\n",
			want: map[string]string{"client.example": "key one", "road@example.org": "key two", "laptop.example": "k3"}},
		{name: "CRLF", file: "a.example k1\r\nb.example k2\r\n", want: map[string]string{"a.example": "k1", "b.example": "k2"}},
		{name: "address identity", file: "192.0.2.7 k\n", want: map[string]string{"192.0.2.7": "k"}},
		{name: "no key", file: "a.example k1\nb.example\n", err: ":2: want an identity and its key"},
		{name: "same identity twice", file: "a.example k1\n@a.example k2\n", err: ":2: a second key for a.example"},
		{name: "bad identity", file: "@ k1\n", err: ":1:"},
		{name: "empty", file: "# nobody\n", err: "names no client"},
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
				if strings.Contains(err.Error(), "k1") || strings.Contains(err.Error(), "k2") {
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
