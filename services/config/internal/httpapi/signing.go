package httpapi

import (
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/policyhooks/policyhooks/services/config/internal/connection"
	"github.com/policyhooks/policyhooks/shared/event"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
)

// setSigning sets the rotation and Ed25519 fields of b on sec (signing_secret is set with the
// rest). An until that is not an RFC 3339 time is a 422 naming it, without its value; the
// connection service judges the values themselves.
func (b secretsBody) setSigning(sec *event.HTTPSSecrets) error {
	var fe fieldErrors
	str := func(v *string) string {
		if v == nil {
			return ""
		}
		return *v
	}
	until := func(v *string, field string) time.Time {
		if v == nil {
			return time.Time{}
		}
		t, err := time.Parse(time.RFC3339, *v)
		if err != nil {
			fe.add("invalid datetime format: an RFC 3339 time with its offset, such as 2026-01-02T15:04:05Z, is expected",
				"value_error.datetime", "body", field)
			return time.Time{}
		}
		return t.UTC()
	}
	sec.SigningSecretPrevious = str(b.SigningSecretPrevious)
	sec.SigningSecretPreviousUntil = until(b.SigningSecretPreviousUntil, "signing_secret_previous_until")
	sec.SigningKey = str(b.SigningKey)
	sec.SigningKeyPrevious = str(b.SigningKeyPrevious)
	sec.SigningKeyPreviousUntil = until(b.SigningKeyPreviousUntil, "signing_key_previous_until")
	return fe.err()
}

// signingKeyAnswer is the answer of GET /connection/{key}/signing-key.
type signingKeyAnswer struct {
	PublicKey              string     `json:"public_key"`
	PublicKeyPrevious      *string    `json:"public_key_previous"`
	PublicKeyPreviousUntil *time.Time `json:"public_key_previous_until"`
}

// getSigningKey is GET /connection/{key}/signing-key: the public keys of the connection's Ed25519
// signing keys, the previous one with its until while it is in use.
func getSigningKey(svc *connection.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		keys, err := svc.SigningKeys(r.Context(), mux.Vars(r)["key"])
		if err != nil {
			writeError(w, r, err)
			return
		}
		out := signingKeyAnswer{PublicKey: keys.Current}
		if keys.Previous != "" {
			until := keys.PreviousUntil
			out.PublicKeyPrevious, out.PublicKeyPreviousUntil = &keys.Previous, &until
		}
		api.WriteJSON(w, http.StatusOK, out)
	}
}
