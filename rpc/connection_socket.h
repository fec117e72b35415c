// Which of this process's sockets carries one TCP connection, and whether its peer has gone: the
// HTTP API (rpc/openai_http.h) cancels a request whose client disconnects while it waits, and
// cpp-httplib hands a handler the connection's addresses but not its socket. Linux only.
#pragma once

#include <string>

namespace bitserve::rpc {

// The socket of this process whose local and peer addresses are these (numeric hosts, as
// getnameinfo(NI_NUMERICHOST) writes them: "127.0.0.1", "::1"), or -1 when none is. The caller
// must keep the connection open while it uses the descriptor (e.g. from inside its request
// handler).
int FindConnectionSocket(const std::string& local_addr, int local_port,
                         const std::string& peer_addr, int peer_port);

// True once the peer of connected socket `fd` has closed or reset the connection (POLLRDHUP,
// POLLHUP or POLLERR; data waiting to be read is not a close). False for fd < 0.
bool PeerClosed(int fd);

}  // namespace bitserve::rpc
