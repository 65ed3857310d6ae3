# Sourced on the device machine: builds bitsandbytes from .dev/bnb.tar.xz (see
# ../shared/docs/real-stack.md) once per machine and puts it on PYTHONPATH.
if [ ! -f /tmp/bnb/bitsandbytes/libbitsandbytes_cuda*.so ] 2>/dev/null; then
	mkdir -p /tmp/bnb && tar -xJf .dev/bnb.tar.xz -C /tmp/bnb
	(cmake -G Ninja -DCOMPUTE_BACKEND=cuda -DCOMPUTE_CAPABILITY=90 -S /tmp/bnb -B /tmp/bnb/build >/tmp/bnb-build.log 2>&1 &&
		cmake --build /tmp/bnb/build >>/tmp/bnb-build.log 2>&1) || { tail -20 /tmp/bnb-build.log; }
	mkdir -p /tmp/bnb/bitsandbytes-0.50.2.dev0.dist-info
	printf 'Metadata-Version: 2.1\nName: bitsandbytes\nVersion: 0.50.2.dev0\n' >/tmp/bnb/bitsandbytes-0.50.2.dev0.dist-info/METADATA
fi
export PYTHONPATH=/tmp/bnb${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
