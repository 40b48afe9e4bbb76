package wire

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/xdg-go/scram"
)

type secretKind int

const (
	secretPlain secretKind = iota
	secretMD5
	secretSCRAM
)

// secret is a parsed users-file secret.
type secret struct {
	kind  secretKind
	plain string
	md5   string // "md5" + 32 hex
	scram scram.StoredCredentials
}

func parseSecret(s string) (secret, error) {
	switch {
	case strings.HasPrefix(s, "SCRAM-SHA-256$"):
		// SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, base64.
		parts := strings.Split(strings.TrimPrefix(s, "SCRAM-SHA-256$"), "$")
		if len(parts) != 2 {
			return secret{}, errors.New("malformed SCRAM-SHA-256 verifier")
		}
		is := strings.SplitN(parts[0], ":", 2)
		ks := strings.SplitN(parts[1], ":", 2)
		if len(is) != 2 || len(ks) != 2 {
			return secret{}, errors.New("malformed SCRAM-SHA-256 verifier")
		}
		iters, err := strconv.Atoi(is[0])
		if err != nil || iters <= 0 {
			return secret{}, errors.New("malformed SCRAM-SHA-256 verifier: iterations")
		}
		salt, err1 := base64.StdEncoding.DecodeString(is[1])
		stored, err2 := base64.StdEncoding.DecodeString(ks[0])
		server, err3 := base64.StdEncoding.DecodeString(ks[1])
		if err1 != nil || err2 != nil || err3 != nil || len(stored) != sha256.Size || len(server) != sha256.Size {
			return secret{}, errors.New("malformed SCRAM-SHA-256 verifier: base64")
		}
		return secret{kind: secretSCRAM, scram: scram.StoredCredentials{
			KeyFactors: scram.KeyFactors{Salt: string(salt), Iters: iters},
			StoredKey:  stored, ServerKey: server,
		}}, nil
	case len(s) == 35 && strings.HasPrefix(s, "md5"):
		if _, err := hex.DecodeString(s[3:]); err != nil {
			return secret{}, errors.New("malformed md5 secret")
		}
		return secret{kind: secretMD5, md5: s}, nil
	default:
		return secret{kind: secretPlain, plain: s}, nil
	}
}

// SCRAMVerifier computes the SCRAM-SHA-256 verifier of password, in the
// format PostgreSQL stores and the users file accepts.
func SCRAMVerifier(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	c, err := scram.SHA256.NewClient("", password, "")
	if err != nil {
		return "", fmt.Errorf("scram: %w", err)
	}
	cr, err := c.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt), Iters: 4096})
	if err != nil {
		return "", fmt.Errorf("scram: %w", err)
	}
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", 4096, base64.StdEncoding.EncodeToString(salt),
		base64.StdEncoding.EncodeToString(cr.StoredKey), base64.StdEncoding.EncodeToString(cr.ServerKey)), nil
}

// MD5Secret is "md5" + md5(password + user), as PostgreSQL stores it.
func MD5Secret(user, password string) string {
	sum := md5.Sum([]byte(password + user))
	return "md5" + hex.EncodeToString(sum[:])
}

// md5Response is what a client sends for AuthenticationMD5Password.
func md5Response(md5secret string, salt [4]byte) string {
	sum := md5.Sum(append([]byte(md5secret[3:]), salt[:]...))
	return "md5" + hex.EncodeToString(sum[:])
}

// scramCredentials returns stored credentials for the secret; a plaintext
// secret is salted afresh for each conversation.
func (s secret) scramCredentials() (scram.StoredCredentials, error) {
	switch s.kind {
	case secretSCRAM:
		return s.scram, nil
	case secretPlain:
		salt := make([]byte, 16)
		if _, err := rand.Read(salt); err != nil {
			return scram.StoredCredentials{}, err
		}
		c, err := scram.SHA256.NewClient("", s.plain, "")
		if err != nil {
			return scram.StoredCredentials{}, err
		}
		return c.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt), Iters: 4096})
	default:
		return scram.StoredCredentials{}, errors.New("an md5 secret cannot be used for scram-sha-256")
	}
}

// checkPassword verifies a cleartext password against the secret.
func (s secret) checkPassword(user, password string) bool {
	switch s.kind {
	case secretPlain:
		return subtle.ConstantTimeCompare([]byte(s.plain), []byte(password)) == 1
	case secretMD5:
		return subtle.ConstantTimeCompare([]byte(s.md5), []byte(MD5Secret(user, password))) == 1
	case secretSCRAM:
		c, err := scram.SHA256.NewClient("", password, "")
		if err != nil {
			return false
		}
		cr, err := c.GetStoredCredentialsWithError(s.scram.KeyFactors)
		if err != nil {
			return false
		}
		return hmac.Equal(cr.StoredKey, s.scram.StoredKey)
	}
	return false
}
