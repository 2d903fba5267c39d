package catalog

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// scramIterations is postgres's default scram_iterations.
const scramIterations = 4096

// PasswordLiteral is what follows PASSWORD in CREATE or ALTER ROLE: a
// SCRAM-SHA-256 verifier, which postgres stores as given, so that the
// password itself never reaches the server nor its statement log. Postgres
// normalises a password with SASLprep before hashing it, which leaves an
// ASCII password as it is; any other goes as a literal for postgres to
// normalise and hash itself.
func PasswordLiteral(password string) (string, error) {
	if !isASCII(password) {
		return literal(password), nil
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("reading a salt for the password: %w", err)
	}
	v, err := scramVerifier(password, salt, scramIterations)
	if err != nil {
		return "", err
	}
	return literal(v), nil
}

// scramVerifier is the verifier postgres keeps in pg_authid.rolpassword
// (RFC 5802, RFC 7677): SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>.
func scramVerifier(password string, salt []byte, iterations int) (string, error) {
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return "", fmt.Errorf("deriving the password's key: %w", err)
	}
	clientKey := hmacSHA256(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	serverKey := hmacSHA256(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, b64(salt), b64(storedKey[:]), b64(serverKey)), nil
}

// matches says whether verifier, as postgres keeps a password
// (pg_authid.rolpassword), is of password: not when there is none, when it
// is MD5's, or when it is another password's. A password that postgres
// normalises itself (not ASCII) cannot be checked here, and is taken to
// match.
func matches(verifier, password string) bool {
	if !isASCII(password) {
		return true
	}
	// SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
	rest, ok := strings.CutPrefix(verifier, "SCRAM-SHA-256$")
	if !ok {
		return false
	}
	params, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return false
	}
	iterText, saltText, ok := strings.Cut(params, ":")
	if !ok {
		return false
	}
	iterations, err := strconv.Atoi(iterText)
	if err != nil || iterations <= 0 {
		return false
	}
	salt, err := base64.StdEncoding.DecodeString(saltText)
	if err != nil {
		return false
	}
	want, err := scramVerifier(password, salt, iterations)
	if err != nil {
		return false
	}
	_, wantKeys, _ := strings.Cut(strings.TrimPrefix(want, "SCRAM-SHA-256$"), "$")
	return hmac.Equal([]byte(keys), []byte(wantKeys))
}

func hmacSHA256(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

func isASCII(s string) bool {
	for i := range len(s) {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
