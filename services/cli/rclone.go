package main

// Linking the rclone target registers the target kind "rclone" (SFTP, WebDAV, Dropbox, Box,
// Google Drive, pCloud, B2) with the runtime configuration; docs/targets/rclone.md.
import _ "github.com/custos-dev/custos/pkg/target/rclone"
