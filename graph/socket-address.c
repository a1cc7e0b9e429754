/* SPDX-License-Identifier: MIT */
/* SocketAddress (qapi/sockets.json): the schema of the address the NBD
 * server listens on and the nbd driver connects to, next to the struct
 * it is decoded into.
 *
 * Thread model: constant tables; decoding runs on the main thread.
 */
#include "graph/socket-address.h"

const char *const bd_socket_address_type_names[] = {
    [BD_SOCKET_ADDRESS_INET] = "inet",
    [BD_SOCKET_ADDRESS_UNIX] = "unix",
    [BD_SOCKET_ADDRESS_VSOCK] = "vsock",
    [BD_SOCKET_ADDRESS_FD] = "fd",
    NULL };

#define A(f) BD_AT(BdSocketAddress, f)
#define HAS(f) BD_HAS(BdSocketAddress, f)

/* Listening sockets take none of the connection options. */
static const BdSchemaField inet_fields[] = {
    { "host", &bd_schema_str, FALSE, A(host) },
    { "port", &bd_schema_str, FALSE, A(port) },
    { "numeric", &bd_schema_bool, TRUE, .flags = BD_FIELD_IGNORED },
    { "to", &bd_schema_uint16, TRUE, .flags = BD_FIELD_IGNORED },
    { "ipv4", &bd_schema_bool, TRUE, A(ipv4), HAS(ipv4) },
    { "ipv6", &bd_schema_bool, TRUE, A(ipv6), HAS(ipv6) },
    { "keep-alive", &bd_schema_bool, TRUE, .flags = BD_FIELD_IGNORED },
    { "mptcp", &bd_schema_bool, TRUE, .flags = BD_FIELD_IGNORED },
    { NULL } };
const BdSchemaType bd_socket_address_inet = {
    .name = "InetSocketAddress", .kind = BD_SCHEMA_OBJECT,
    .fields = inet_fields };

/* Abstract sockets are not offered: the server refuses no path. */
static const BdSchemaField unix_fields[] = {
    { "path", &bd_schema_str, FALSE, A(path) },
    { "abstract", &bd_schema_bool, TRUE, .flags = BD_FIELD_IGNORED },
    { "tight", &bd_schema_bool, TRUE, .flags = BD_FIELD_IGNORED },
    { NULL } };
const BdSchemaType bd_socket_address_unix = {
    .name = "UnixSocketAddress", .kind = BD_SCHEMA_OBJECT,
    .fields = unix_fields };

/* vsock and fd addresses are accepted by the schema and refused by the
 * server for their type, before their members matter. */
static const BdSchemaField vsock_fields[] = {
    { "cid", &bd_schema_str, FALSE, .flags = BD_FIELD_IGNORED },
    { "port", &bd_schema_str, FALSE, .flags = BD_FIELD_IGNORED },
    { NULL } };
const BdSchemaType bd_socket_address_vsock = {
    .name = "VsockSocketAddress", .kind = BD_SCHEMA_OBJECT,
    .fields = vsock_fields };
static const BdSchemaField string_fields[] = {
    { "str", &bd_schema_str, FALSE, .flags = BD_FIELD_IGNORED },
    { NULL } };
const BdSchemaType bd_socket_address_fd = {
    .name = "String", .kind = BD_SCHEMA_OBJECT, .fields = string_fields };

static const BdSchemaType type_enum = {
    .name = "SocketAddressType", .kind = BD_SCHEMA_ENUM,
    .enum_values = bd_socket_address_type_names };
static const BdSchemaField base_fields[] = {
    { "type", &type_enum, FALSE, A(type) },
    { NULL } };
static const BdSchemaVariant variants[] = {
    { "inet", &bd_socket_address_inet },
    { "unix", &bd_socket_address_unix },
    { "vsock", &bd_socket_address_vsock },
    { "fd", &bd_socket_address_fd },
    { NULL } };
const BdSchemaType bd_socket_address = {
    .name = "SocketAddress", .kind = BD_SCHEMA_UNION, .fields = base_fields,
    .discriminator = "type", .variants = variants };

void bd_socket_address_decode(GVariant *addr, BdSocketAddress *out)
{
    *out = (BdSocketAddress) { 0 };
    bd_schema_decode_union(&bd_socket_address, addr, out);
}
