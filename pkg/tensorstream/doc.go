// Package tensorstream reads and writes the nf4pipe tensor stream: the format in
// which nf4pipe's stages (detect, plan, quantize, place, verify) hand a model to
// one another over pipes.
//
// A stream is a magic number with the format version, a header record, then for
// each tensor a descriptor record, its payload in checksummed chunks and a trailer,
// and finally an end record with counts. docs/tensorstream.md specifies the bytes.
//
// The API is shaped like archive/tar:
//
//	r := tensorstream.NewReader(os.Stdin)
//	h, err := r.Header()
//	for {
//		t, err := r.Next()
//		if err == io.EOF {
//			break // the end record was read and its counts matched
//		}
//		if err != nil {
//			return err
//		}
//		io.Copy(dst, r) // r serves the payload of t
//	}
//
//	w := tensorstream.NewWriter(os.Stdout)
//	w.WriteHeader(h)
//	w.WriteTensor(t)
//	w.Write(payload) // as many calls as needed, Size bytes in all
//	w.Close()        // finishes the last tensor and writes the end record
//
// Memory stays bounded: the reader serves payload bytes straight from its input
// buffer, and the writer holds at most one chunk. Every length the input declares
// is checked against a limit before anything is allocated for it. Errors are sticky
// and wrapped in *Error, which names the tensor and byte offset; io.EOF from Next
// means the end record was read, and input that ends anywhere else yields
// io.ErrUnexpectedEOF.
//
// Values known only once a payload is written (the CRC-32C of the payload and the
// nested offset of double quantization) travel in the tensor's trailer: the reader
// fills Tensor.Checksum and Tensor.Quant.NestedOffset when the payload has been
// read to io.EOF, and the writer writes them from the Tensor as it is at EndTensor
// (called by the next WriteTensor or Close when the caller does not).
package tensorstream
