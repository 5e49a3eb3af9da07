package keys

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// RotateKeyFile adds a new KEK version to the key file at path and makes it the active one;
// the previous versions stay, retired: they still unwrap, never wrap. It returns the ids of the
// previous active KEK and of the new one. The file is replaced atomically (temp file, fsync,
// rename, fsync of the directory). Rotations must not run concurrently on one file.
func RotateKeyFile(path string, now time.Time) (oldID, newID string, err error) {
	f, err := readKeyFile(path)
	if err != nil {
		return "", "", err
	}
	kek := make([]byte, 32)
	if _, err := rand.Read(kek); err != nil {
		return "", "", fmt.Errorf("keys: generate kek: %w", err)
	}
	oldID, newID = f.Active, localKeyID(kek)
	f.KEKs = append(f.KEKs, kekVersion{KeyID: newID, KEK: kek, Created: now.UTC().Format(time.RFC3339)})
	f.Active = newID
	return oldID, newID, writeKeyFile(path, f)
}

// DestroyRetiredKEKs removes the key bytes of every KEK version but the active one from the key
// file at path, keeping their ids and the time. It returns the ids destroyed. Callers must first
// have re-wrapped every live data key under the active KEK and written its key envelope to the
// targets (custos keys destroy-retired checks both): afterwards nothing wrapped by a destroyed
// version opens again, which is what completes an erasure of locked copies.
func DestroyRetiredKEKs(path string, now time.Time) ([]string, error) {
	f, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	var gone []string
	for i, v := range f.KEKs {
		if v.KeyID == f.Active || len(v.KEK) == 0 {
			continue
		}
		clear(f.KEKs[i].KEK)
		f.KEKs[i].KEK = nil
		f.KEKs[i].Destroyed = now.UTC().Format(time.RFC3339)
		gone = append(gone, v.KeyID)
	}
	if len(gone) == 0 {
		return nil, nil
	}
	return gone, writeKeyFile(path, f)
}

// RetiredKEKs returns the ids of the KEK versions in the key file at path that are retired but
// still held (not destroyed).
func RetiredKEKs(path string) ([]string, error) {
	f, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, v := range f.KEKs {
		if v.KeyID != f.Active && len(v.KEK) > 0 {
			out = append(out, v.KeyID)
		}
	}
	return out, nil
}

func readKeyFile(path string) (keyFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return keyFile{}, fmt.Errorf("keys: read key file: %w", err)
	}
	defer clear(data)
	return parseKeyFile(path, data)
}

// writeKeyFile replaces the key file with f (version 2), atomically.
func writeKeyFile(path string, f keyFile) error {
	f.Version, f.KeyID, f.KEK = 2, "", nil
	data, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("keys: encode key file: %w", err)
	}
	defer clear(data)
	return installFile(path, data, true)
}
