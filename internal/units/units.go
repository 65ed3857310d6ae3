// Package units formats byte counts for the tools' reports, progress lines and
// GPU names, so that every stage writes a size the same way: memory (what a GPU
// or a checkpoint holds) in binary units, data moved and rates in decimal ones,
// as disks and networks are quoted.
package units

import "strconv"

// Bytes writes a size in binary units: "812 B", "1.5 KiB", "310.2 MiB" (one
// decimal below a GiB), "21.34 GiB", "1.02 TiB" (two decimals from a GiB on).
func Bytes(n int64) string { return format(n, 1024, "KiB", "MiB", "GiB", "TiB", "PiB", "EiB") }

// SI writes an amount of data moved, or a rate, in decimal units with one
// decimal: "812 B", "1.2 kB", "500.0 MB", "2.2 GB".
func SI(n int64) string { return format(n, 1000, "kB", "MB", "GB", "TB", "PB", "EB") }

func format(n, base int64, units ...string) string {
	if n < 0 {
		if n == -n { // math.MinInt64 has no positive counterpart
			return "-" + format(-(n+1), base, units...)
		}
		return "-" + format(-n, base, units...)
	}
	if n < base {
		return strconv.FormatInt(n, 10) + " B"
	}
	exp, div := 0, base
	for n/div >= base && exp < len(units)-1 {
		div *= base
		exp++
	}
	prec := 1
	if base == 1024 && exp >= 2 {
		prec = 2
	}
	return strconv.FormatFloat(float64(n)/float64(div), 'f', prec, 64) + " " + units[exp]
}
