// Command verify checks a 4-bit tensor stream or bitsandbytes checkpoint
// against the model it came from; see pkg/verify.
package main
