package awskms

import (
	"errors"

	"github.com/aws/smithy-go"
)

// rejectCodes are the Decrypt errors that are about the ciphertext or its key, not about
// reaching KMS: they become keys.ErrUnwrap. AccessDeniedException is among them because KMS
// answers it for a ciphertext whose key was deleted or is in another account.
var rejectCodes = map[string]bool{
	"InvalidCiphertextException": true, // another encryption context, modified bytes
	"KMSInvalidStateException":   true, // pending deletion
	"DisabledException":          true,
	"NotFoundException":          true,
	"IncorrectKeyException":      true,
	"AccessDeniedException":      true,
}

// rejected reports whether a Decrypt error means KMS refused this ciphertext, and its code.
func rejected(err error) (string, bool) {
	var ae smithy.APIError
	if errors.As(err, &ae) && rejectCodes[ae.ErrorCode()] {
		return ae.ErrorCode(), true
	}
	return "", false
}

// scrub returns an error of Encrypt or Decrypt without text that may quote the request or the
// response: a service error keeps its code and fault and loses its message, a response that
// could not be decoded becomes a plain error. Transport errors (which name the endpoint and
// the operation) and context errors are returned as they are.
func scrub(err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return &smithy.GenericAPIError{Code: ae.ErrorCode(), Fault: ae.ErrorFault()}
	}
	var de *smithy.DeserializationError
	if errors.As(err, &de) {
		return errors.New("malformed KMS response")
	}
	return err
}
