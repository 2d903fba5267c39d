// Package credentials makes passwords.
package credentials

import (
	"crypto/rand"
	"fmt"
	"math/big"
)

// alphabet avoids characters that need quoting in URIs, conninfo strings and shells.
const alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"

// PasswordLength gives about 190 bits of entropy with this alphabet.
const PasswordLength = 32

// Password returns a random password from crypto/rand.
func Password() (string, error) {
	out := make([]byte, PasswordLength)
	limit := big.NewInt(int64(len(alphabet)))
	for i := range out {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return "", fmt.Errorf("reading random bytes for a password: %w", err)
		}
		out[i] = alphabet[n.Int64()]
	}
	return string(out), nil
}
