#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Export a raw image over NBD with TLS on TCP 127.0.0.1: make a CA, a server
# certificate and a client certificate with certtool, start the daemon with
# tls-creds-x509 (client certificates required) and an authz-simple that lets
# in the client's distinguished name only, then write and read the export
# with qemu-io and look at it with nbdinfo, both over TLS; show that a
# plaintext client is refused.
#   examples/tls-export.sh [path/to/blockd]
# BLOCKD=path or BLOCKD_REFERENCE=1 (qemu-storage-daemon) select the daemon.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
if [[ ${BLOCKD_REFERENCE:-0} != 0 ]]; then
    daemon=/usr/bin/qemu-storage-daemon
else
    daemon=${1:-${BLOCKD:-$here/build/daemon/blockd}}
fi
[[ -x $daemon ]] || { echo "daemon $daemon not built (run meson compile -C build)" >&2; exit 77; }
command -v certtool >/dev/null || { echo "certtool missing (apt-get install gnutls-bin)" >&2; exit 77; }

dir=$(mktemp -d)
pid=
cleanup() {
    [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

# 1. Certificates.  QEMU's file names: the server's directory holds
#    ca-cert.pem, server-cert.pem and server-key.pem; a client's holds
#    ca-cert.pem, client-cert.pem and client-key.pem (libnbd's
#    tls-certificates= reads the same names).
mkdir -p "$dir/ca" "$dir/server" "$dir/client"
certtool --generate-privkey --key-type=ecdsa --outfile "$dir/ca/ca-key.pem" 2>/dev/null
cat > "$dir/ca.info" <<END
cn = "blockd example CA"
ca
cert_signing_key
expiration_days = 365
END
certtool --generate-self-signed --load-privkey "$dir/ca/ca-key.pem" \
    --template "$dir/ca.info" --outfile "$dir/ca/ca-cert.pem" 2>/dev/null

cat > "$dir/server.info" <<END
organization = "blockd example"
cn = "localhost"
dns_name = "localhost"
ip_address = "127.0.0.1"
tls_www_server
encryption_key
signing_key
expiration_days = 365
END
cat > "$dir/client.info" <<END
organization = "blockd example"
cn = "client1"
tls_www_client
encryption_key
signing_key
expiration_days = 365
END
for who in server client; do
    certtool --generate-privkey --key-type=ecdsa --outfile "$dir/$who/$who-key.pem" 2>/dev/null
    certtool --generate-certificate --load-privkey "$dir/$who/$who-key.pem" \
        --load-ca-certificate "$dir/ca/ca-cert.pem" --load-ca-privkey "$dir/ca/ca-key.pem" \
        --template "$dir/$who.info" --outfile "$dir/$who/$who-cert.pem" 2>/dev/null
    cp "$dir/ca/ca-cert.pem" "$dir/$who/"
done
echo "certificates in $dir/server and $dir/client"

# 2. A free TCP port on 127.0.0.1 (the kernel's pick).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# 3. The daemon: credentials, an authz object (the client's DN, gnutls's
#    order, the comma doubled on the command line), the NBD server with
#    tls-creds and tls-authz, a writable export.
truncate -s 64M "$dir/disk.raw"
"$daemon" \
    --object tls-creds-x509,id=tls0,dir="$dir/server",endpoint=server \
    --object "authz-simple,id=auth0,identity=O=blockd example,,CN=client1" \
    --blockdev driver=file,node-name=disk-file,filename="$dir/disk.raw" \
    --blockdev driver=raw,node-name=disk,file=disk-file \
    --nbd-server addr.type=inet,addr.host=127.0.0.1,addr.port="$port",tls-creds=tls0,tls-authz=auth0 \
    --export type=nbd,id=export0,node-name=disk,name=disk,writable=on \
    --pidfile "$dir/blockd.pid" 2>"$dir/daemon.log" &
pid=$!
up=
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then up=1; break; fi
    sleep 0.05
done
[[ -n $up ]] || { echo "daemon did not start" >&2; cat "$dir/daemon.log" >&2; exit 1; }

uri="nbds://127.0.0.1:$port/disk?tls-certificates=$dir/client"
opts="driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=$port,export=disk,tls-creds=tls0"
client=(--object "tls-creds-x509,id=tls0,dir=$dir/client,endpoint=client")
echo "exported $dir/disk.raw as $uri"

# 4. Write a pattern with qemu-io over TLS and read it back with a second client.
qemu-io "${client[@]}" --image-opts -c 'write -P 0x5a 0 1M' -c 'write -P 0xa5 32M 4k' "$opts"
qemu-io "${client[@]}" --image-opts -c 'read -P 0x5a 0 1M' -c 'read -P 0xa5 32M 4k' "$opts"

# 5. What nbdinfo sees over TLS.
nbdinfo "$uri" | head -2
nbdinfo --size "$uri"

# 6. A plaintext client is refused.
if nbdinfo --size "nbd://127.0.0.1:$port/disk" 2>/dev/null; then
    echo "plaintext client was let in" >&2; exit 1
fi
echo "plaintext client refused"

# 7. Stop the daemon; the data is in the file.
kill "$pid"; wait "$pid" || true; pid=
qemu-io -f raw -c 'read -P 0x5a 0 1M' "$dir/disk.raw"
echo "example finished: OK"
