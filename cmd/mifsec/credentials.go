package main

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"unicode"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/ike"
	"github.com/urfave/cli/v2"
)

// ikeCredentials are the authentication and proposal settings that connect
// and gateway share.
type ikeCredentials struct {
	psk        []byte
	clientPSKs map[string][]byte // the gateway's --client-psks
	key        crypto.Signer
	certs      []*x509.Certificate
	cas        *ike.TrustStore
	ike, esp   []ike.ProposalSpec
	espAlgs    []dataplane.Algorithm // the data plane algorithms esp allows
	eap        *ike.EAPCredentials   // connect's --eap-identity and --password-file
}

// parseCredentials reads --psk-file or --cert/--key, --ca, --ike and --esp
// (the gateway's --client-psks stand in for --psk-file).
func parseCredentials(c *cli.Context) (ikeCredentials, error) {
	var cr ikeCredentials
	var err error
	if c.String("psk-file") != "" && c.String("key") != "" {
		return cr, errors.New("give either --psk-file or --cert/--key, not both")
	}
	if cr.psk, cr.clientPSKs, err = readPSKs(c); err != nil {
		return cr, err
	}
	switch {
	case c.String("key") != "" || c.String("cert") != "":
		if c.String("key") == "" || c.String("cert") == "" {
			return cr, errors.New("--cert and --key go together")
		}
		if cr.certs, err = ike.LoadCertificates(c.String("cert")); err != nil {
			return cr, fmt.Errorf("--cert: %w", err)
		}
		fi, err := os.Stat(c.String("key"))
		if err == nil {
			err = checkSecretMode(c.String("key"), fi)
		}
		if err != nil {
			return cr, fmt.Errorf("--key: %w", err)
		}
		if cr.key, err = ike.LoadPrivateKey(c.String("key")); err != nil {
			return cr, fmt.Errorf("--key: %w", err)
		}
	case cr.psk == nil && cr.clientPSKs == nil && c.String("eap-identity") == "":
		return cr, errors.New("no credentials: give --psk-file, or --cert and --key")
	}
	if cr.eap, err = readEAPCredentials(c, cr); err != nil {
		return cr, err
	}
	if ca := c.String("ca"); ca != "" {
		if cr.cas, err = ike.LoadTrustStore(ca); err != nil {
			return cr, fmt.Errorf("--ca: %w", err)
		}
	}
	if f := c.String("crl"); f != "" {
		if cr.cas == nil {
			return cr, errors.New("--crl needs --ca: the lists are checked against the CAs they come from")
		}
		if err := loadCRLs(cr.cas, f); err != nil {
			return cr, err
		}
	}
	if cr.ike, err = ike.ParseIKEProposals(c.String("ike")); err != nil {
		return cr, fmt.Errorf("--ike: %w", err)
	}
	if cr.esp, err = ike.ParseESPProposals(c.String("esp")); err != nil {
		return cr, fmt.Errorf("--esp: %w", err)
	}
	if cr.espAlgs, err = espAlgorithms(cr.esp); err != nil {
		return cr, fmt.Errorf("--esp: %w", err)
	}
	return cr, nil
}

// readPSKs reads the pre-shared key files given: --psk-file and the
// gateway's --client-psks (at start and again on SIGHUP).
func readPSKs(c *cli.Context) (psk []byte, perClient map[string][]byte, err error) {
	if f := c.String("psk-file"); f != "" {
		if psk, err = readPSKFile(f); err != nil {
			return nil, nil, fmt.Errorf("--psk-file: %w", err)
		}
	}
	if f := c.String("client-psks"); f != "" {
		if perClient, err = readClientPSKs(f); err != nil {
			return nil, nil, fmt.Errorf("--client-psks: %w", err)
		}
	}
	return psk, perClient, nil
}

// minPSKLen is the shortest pre-shared key accepted. A PSK is only as
// strong as it is hard to guess, and IKEv2 lets anyone who records one
// exchange try guesses offline (RFC 7296 §2.15 asks for keys as strong
// as the negotiated PRF's key): 16 bytes is the least that gives a random
// key 128 bits.
const minPSKLen = 16

// readSecretFile reads a file that holds a secret (a pre-shared key, an
// ESP key). Like ssh with a private key, it refuses a file that its group
// or others may read or write: the secret must be the owner's alone.
func readSecretFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := checkSecretMode(path, fi); err != nil {
		return nil, err
	}
	return io.ReadAll(f)
}

// checkSecretMode refuses a file holding a secret that is not a regular
// file or that its group or others may read or write.
func checkSecretMode(path string, fi os.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s has mode %04o: a file holding a secret must not be open to its group or others (chmod 600 %s)", path, perm, path)
	}
	return nil
}

// checkPSK refuses a pre-shared key shorter than minPSKLen; what names the
// key (a file, a client) prefixes the error. The key itself is never shown.
func checkPSK(psk []byte, what string) error {
	if len(psk) < minPSKLen {
		return fmt.Errorf("%s: the pre-shared key has %d bytes, at least %d are needed (for example: head -c 24 /dev/urandom | base64)", what, len(psk), minPSKLen)
	}
	return nil
}

// readPSKFile reads a pre-shared key: the file's content without the
// line end. The file must be its owner's alone and the key at least
// minPSKLen bytes long.
func readPSKFile(path string) ([]byte, error) {
	psk, err := readSecretFile(path)
	if err != nil {
		return nil, err
	}
	if psk = bytes.TrimRight(psk, "\r\n"); len(psk) == 0 {
		return nil, fmt.Errorf("%s is empty", path)
	}
	if err := checkPSK(psk, path); err != nil {
		return nil, err
	}
	return psk, nil
}

// readClientPSKs reads a file of per-client pre-shared keys: one client a
// line, its identity (as --local-id takes it), white space, then its key
// to the end of the line. Blank lines and lines starting with # are
// skipped. The keys are returned by the canonical form of the identity.
// The file must be its owner's alone and every key at least minPSKLen
// bytes long.
func readClientPSKs(path string) (map[string][]byte, error) {
	lines, err := readSecretLines(path, "key")
	if err != nil {
		return nil, err
	}
	keys := map[string][]byte{}
	for _, l := range lines {
		id, err := ike.ParseIdentity(l.name)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, l.n, err)
		}
		if _, dup := keys[id.String()]; dup {
			return nil, fmt.Errorf("%s:%d: a second key for %s", path, l.n, id)
		}
		if err := checkPSK([]byte(l.value), fmt.Sprintf("%s:%d: %s", path, l.n, id)); err != nil {
			return nil, err
		}
		keys[id.String()] = []byte(l.value)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s names no client", path)
	}
	return keys, nil
}

// secretLine is one line of a file of 'NAME SECRET' lines.
type secretLine struct {
	n           int // its number, from 1
	name, value string
}

// readSecretLines reads a file of 'NAME SECRET' lines (what names the
// secret in errors): the name up to the first white space, the secret the
// rest of the line, white space around it trimmed. Blank lines and lines
// starting with # are skipped. The file must be its owner's alone.
func readSecretLines(path, what string) ([]secretLine, error) {
	data, err := readSecretFile(path)
	if err != nil {
		return nil, err
	}
	var lines []secretLine
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		end := strings.IndexFunc(line, unicode.IsSpace)
		if end < 0 {
			return nil, fmt.Errorf("%s:%d: want an identity and its %s", path, i+1, what)
		}
		lines = append(lines, secretLine{n: i + 1, name: line[:end], value: strings.TrimSpace(line[end:])})
	}
	return lines, nil
}

// loadCRLs reads --crl into the trust store (at start and on SIGHUP).
func loadCRLs(cas *ike.TrustStore, path string) error {
	crls, err := ike.LoadCRLs(path)
	if err != nil {
		return fmt.Errorf("--crl: %w", err)
	}
	warnings, err := cas.SetCRLs(crls...)
	if err != nil {
		return fmt.Errorf("--crl: %w", err)
	}
	for _, w := range warnings {
		slog.Warn("--crl: "+w, "file", path)
	}
	return nil
}

// readEAPCredentials reads connect's --eap-identity and --password-file
// (nil without --eap-identity). EAP replaces a pre-shared key or our own
// certificate, and the gateway is then checked by its certificate alone.
func readEAPCredentials(c *cli.Context, cr ikeCredentials) (*ike.EAPCredentials, error) {
	name := c.String("eap-identity")
	if name == "" {
		if c.String("password-file") != "" {
			return nil, errors.New("--password-file needs --eap-identity")
		}
		return nil, nil
	}
	switch {
	case cr.psk != nil || cr.key != nil:
		return nil, errors.New("--eap-identity excludes --psk-file and --cert/--key: EAP is how we authenticate")
	case c.String("password-file") == "":
		return nil, errors.New("--eap-identity needs --password-file")
	case c.String("ca") == "":
		return nil, errors.New("--eap-identity needs --ca: the gateway proves itself with a certificate before the password is used")
	}
	password, err := readPasswordFile(c.String("password-file"))
	if err != nil {
		return nil, fmt.Errorf("--password-file: %w", err)
	}
	cred, err := ike.NewEAPCredentials(name, password)
	if err != nil {
		return nil, fmt.Errorf("--eap-identity: %w", err)
	}
	return cred, nil
}

// readPasswordFile reads a password: the file's first line. The file must
// be its owner's alone.
func readPasswordFile(path string) (string, error) {
	data, err := readSecretFile(path)
	if err != nil {
		return "", err
	}
	password, _, _ := strings.Cut(string(data), "\n")
	if password = strings.TrimRight(password, "\r"); password == "" {
		return "", fmt.Errorf("%s holds no password on its first line", path)
	}
	return password, nil
}

// readEAPUsers reads the gateway's --eap-users: one user a line, its EAP
// identity, white space, then its password to the end of the line (white
// space around it trimmed). Blank lines and lines starting with # are
// skipped. The file must be its owner's alone. Errors name the line, never
// a password.
func readEAPUsers(path string) (*ike.EAPUsers, error) {
	lines, err := readSecretLines(path, "password")
	if err != nil {
		return nil, err
	}
	passwords := map[string]string{}
	for _, l := range lines {
		if _, dup := passwords[l.name]; dup {
			return nil, fmt.Errorf("%s:%d: a second password for %s", path, l.n, ike.Printable(l.name))
		}
		passwords[l.name] = l.value
	}
	if len(passwords) == 0 {
		return nil, fmt.Errorf("%s names no user", path)
	}
	return ike.NewEAPUsers(passwords)
}
