// Package images holds the check of make images: with IMAGES=1, go test builds the images twice
// into fresh directories, compares the digests and reads each tarball's config and files.
package images
