// NCCL on the CPU, for the CUDA driver emulation (driver.cpp): the part of NCCL's API that
// cudarc's `nccl` module and tokenmill's NCCL communicator (comm/src/nccl_backend.rs) call —
// the unique id, communicators by rank, point-to-point sends and receives, all-gather and
// broadcast, groups — between the processes of one machine (the ranks an `mpirun` starts),
// over Unix domain sockets. Linked by build.rs into `libnccl.so` beside the emulated
// `libcuda.so`, so the communicator's own Rust code — the id handed over the MPI bootstrap,
// the device staging, the grouped sends and receives of its all-to-all-v — runs unchanged in CI.
//
// What it checks that real NCCL would leave to a hang or garbage: every buffer is emulated
// device memory large enough for its count (asked of the emulated driver), a receive's count
// equals its matching send's (each message carries its length), ranks and roots are in range,
// and a group is closed as often as it was opened. Semantics: calls on a stream complete
// before they return (as every call of the emulated driver does); inside a group
// (ncclGroupStart/End) the operations run together at the outermost ncclGroupEnd — every
// send on a thread of its own per peer, receives in order — so a group's sends and receives
// between two ranks cannot deadlock, as on NCCL. Outside a group a send returns once its
// bytes are handed to the peer's socket (a receive waits for them).
//
// The unique id names a fresh directory (mkdtemp under $TMPDIR or /tmp) where each rank
// listens while the communicator forms; the files go once every connection is made. What it
// does not provide: reductions (ncclAllReduce, ncclReduce, ncclReduceScatter — tokenmill's
// collectives are built deterministically on the primitives), ranks on other machines, speed.
#include <dlfcn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "link.h"

#define API extern "C" __attribute__((visibility("default")))

typedef int ncclResult_t;
enum : int {
    ncclSuccess = 0,
    ncclUnhandledCudaError = 1,
    ncclSystemError = 2,
    ncclInternalError = 3,
    ncclInvalidArgument = 4,
    ncclInvalidUsage = 5,
    ncclRemoteError = 6,
};

struct ncclUniqueId {
    char internal[128];
};

namespace {

constexpr char kIdTag[] = "tokenmill-nccl-emu:";
constexpr int kVersion = 22803;  // reported as NCCL 2.28.3

thread_local std::string g_last_error;

ncclResult_t fail(ncclResult_t r, const std::string& what) {
    g_last_error = what;
    std::fprintf(stderr, "emulated NCCL: %s\n", what.c_str());
    return r;
}

// Bytes of one element of each ncclDataType_t (int8, uint8, int32, uint32, int64, uint64,
// float16, float32, float64, bfloat16, float8e4m3, float8e5m2); 0: not a type.
size_t type_size(int t) {
    static const size_t sizes[] = {1, 1, 4, 4, 8, 8, 2, 4, 8, 2, 1, 1};
    return t >= 0 && t < (int)(sizeof sizes / sizeof sizes[0]) ? sizes[t] : 0;
}

// The emulated driver's check that [p, p + bytes) lies inside one device allocation.
ncclResult_t device_range(const void* p, size_t bytes, const char* what) {
    int inside = tm_emu_link::device_range(p, bytes);
    if (inside < 0) return fail(ncclUnhandledCudaError, "needs the emulated CUDA driver (libcuda.so) loaded");
    if (inside == 0)
        return fail(ncclInvalidArgument, std::string(what) + ": " + std::to_string(bytes) +
                                             " bytes at " + std::to_string((uintptr_t)p) +
                                             " are not inside one device allocation");
    return ncclSuccess;
}

bool write_all(int fd, const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
        ssize_t w = ::send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        c += w;
        n -= (size_t)w;
    }
    return true;
}

bool read_all(int fd, void* p, size_t n) {
    char* c = static_cast<char*>(p);
    while (n > 0) {
        ssize_t r = ::recv(fd, c, n, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        c += r;
        n -= (size_t)r;
    }
    return true;
}

}  // namespace

struct ncclComm {
    int rank = 0, nranks = 0;
    std::vector<int> fd;  // socket to each peer (-1 for this rank)
};
typedef ncclComm* ncclComm_t;

namespace {

// One operation of a group: a send or receive of `bytes` with `peer`, or a local copy.
struct Op {
    enum Kind { Send, Recv, Copy } kind;
    ncclComm_t comm;
    int peer;
    const void* src;
    void* dst;
    size_t bytes;
};

thread_local int g_depth = 0;
thread_local std::vector<Op> g_ops;

// Runs `ops` together: sends to another rank on one thread per (communicator, peer), in
// their order; sends to this rank matched in order with receives from it; copies; then the
// receives from other ranks in order on this thread.
ncclResult_t run(std::vector<Op> ops) {
    tm_emu_link::flush();  // the stream's earlier copies first
    std::map<std::pair<ncclComm_t, int>, std::vector<const Op*>> sends;
    // Per communicator, its sends to this rank and its receives from it.
    std::map<ncclComm_t, std::pair<std::vector<const Op*>, std::vector<const Op*>>> self;
    for (const Op& o : ops) {
        bool mine = o.peer == o.comm->rank;
        if (o.kind == Op::Send && mine) self[o.comm].first.push_back(&o);
        else if (o.kind == Op::Send) sends[{o.comm, o.peer}].push_back(&o);
        else if (o.kind == Op::Recv && mine) self[o.comm].second.push_back(&o);
    }
    for (auto& [comm, pair] : self) {
        auto& [ss, rs] = pair;
        std::string me = "rank " + std::to_string(comm->rank) + ": ";
        if (rs.size() != ss.size())
            return fail(ncclInvalidUsage, me + std::to_string(ss.size()) + " sends to itself, " +
                                              std::to_string(rs.size()) + " receives");
        for (size_t i = 0; i < rs.size(); i++) {
            if (rs[i]->bytes != ss[i]->bytes)
                return fail(ncclInvalidUsage, me + "a receive of " + std::to_string(rs[i]->bytes) +
                                                  " bytes from itself matched a send of " +
                                                  std::to_string(ss[i]->bytes));
            std::memmove(rs[i]->dst, ss[i]->src, rs[i]->bytes);
        }
    }
    std::vector<std::thread> threads;
    std::vector<char> ok(sends.size(), 1);
    size_t t = 0;
    for (auto& [key, list] : sends) {
        char* flag = &ok[t++];
        int fd = key.first->fd[key.second];
        threads.emplace_back([fd, flag, list = list] {
            for (const Op* o : list) {
                uint64_t n = o->bytes;
                if (!write_all(fd, &n, 8) || !write_all(fd, o->src, o->bytes)) {
                    *flag = 0;
                    return;
                }
            }
        });
    }
    for (const Op& o : ops)
        if (o.kind == Op::Copy) std::memmove(o.dst, o.src, o.bytes);
    ncclResult_t result = ncclSuccess;
    for (const Op& o : ops) {
        if (o.kind != Op::Recv || o.peer == o.comm->rank || result != ncclSuccess) continue;
        int fd = o.comm->fd[o.peer];
        uint64_t n = 0;
        if (!read_all(fd, &n, 8)) {
            result = fail(ncclRemoteError, "rank " + std::to_string(o.comm->rank) +
                                               ": the connection to rank " +
                                               std::to_string(o.peer) + " closed");
        } else if (n != o.bytes) {
            result = fail(ncclInvalidUsage, "rank " + std::to_string(o.comm->rank) +
                                                ": a receive of " + std::to_string(o.bytes) +
                                                " bytes from rank " + std::to_string(o.peer) +
                                                " matched a send of " + std::to_string(n));
        } else if (!read_all(fd, o.dst, o.bytes)) {
            result = fail(ncclRemoteError, "rank " + std::to_string(o.comm->rank) +
                                               ": the connection to rank " +
                                               std::to_string(o.peer) + " closed mid-message");
        }
    }
    for (auto& th : threads) th.join();
    if (result == ncclSuccess)
        for (char f : ok)
            if (!f) return fail(ncclRemoteError, "a send to a peer failed (its connection closed)");
    return result;
}

// Queues `ops` in the open group, or runs them now.
ncclResult_t submit(std::vector<Op> ops) {
    if (g_depth > 0) {
        g_ops.insert(g_ops.end(), ops.begin(), ops.end());
        return ncclSuccess;
    }
    return run(std::move(ops));
}

ncclResult_t check_comm(ncclComm_t comm) {
    return comm ? ncclSuccess : fail(ncclInvalidArgument, "a null communicator");
}

ncclResult_t check_peer(ncclComm_t comm, int peer, const char* what) {
    if (peer < 0 || peer >= comm->nranks)
        return fail(ncclInvalidArgument, std::string(what) + " " + std::to_string(peer) +
                                             " in a communicator of " +
                                             std::to_string(comm->nranks));
    return ncclSuccess;
}

ncclResult_t bytes_of(size_t count, int type, size_t* bytes) {
    size_t s = type_size(type);
    if (s == 0) return fail(ncclInvalidArgument, "data type " + std::to_string(type));
    *bytes = count * s;
    return ncclSuccess;
}

std::string socket_path(const std::string& dir, int rank) {
    return dir + "/r" + std::to_string(rank);
}

}  // namespace

API ncclResult_t ncclGetVersion(int* version) {
    if (!version) return fail(ncclInvalidArgument, "null version");
    *version = kVersion;
    return ncclSuccess;
}

API const char* ncclGetErrorString(ncclResult_t r) {
    switch (r) {
        case ncclSuccess: return "no error";
        case ncclUnhandledCudaError: return "unhandled cuda error";
        case ncclSystemError: return "unhandled system error";
        case ncclInternalError: return "internal error";
        case ncclInvalidArgument: return "invalid argument";
        case ncclInvalidUsage: return "invalid usage";
        case ncclRemoteError: return "remote process exited or there was a network error";
        default: return "unknown result code";
    }
}

API const char* ncclGetLastError(ncclComm_t) { return g_last_error.c_str(); }

// A fresh directory for the communicator's rendezvous, named in the id.
API ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
    if (!id) return fail(ncclInvalidArgument, "null unique id");
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/tm-nccl-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back(0);
    if (!mkdtemp(buf.data())) return fail(ncclSystemError, "mkdtemp " + tmpl + ": " + std::strerror(errno));
    std::string s = std::string(kIdTag) + buf.data();
    if (s.size() >= sizeof id->internal) return fail(ncclSystemError, "rendezvous path too long: " + s);
    std::memset(id->internal, 0, sizeof id->internal);
    std::memcpy(id->internal, s.data(), s.size());
    return ncclSuccess;
}

// Every rank listens at <dir>/r<rank>, connects to each lower rank (retrying until it
// listens, for up to TOKENMILL_NCCL_EMU_TIMEOUT seconds, default 60) and accepts each higher
// one; a connection starts with the connecting rank's number.
API ncclResult_t ncclCommInitRank(ncclComm_t* out, int nranks, ncclUniqueId id, int rank) {
    if (!out) return fail(ncclInvalidArgument, "null communicator pointer");
    if (nranks < 1 || rank < 0 || rank >= nranks)
        return fail(ncclInvalidArgument, "rank " + std::to_string(rank) + " of " + std::to_string(nranks));
    std::string s(id.internal, strnlen(id.internal, sizeof id.internal));
    if (s.rfind(kIdTag, 0) != 0)
        return fail(ncclInvalidArgument, "not a unique id of this emulation (ncclGetUniqueId)");
    std::string dir = s.substr(sizeof kIdTag - 1);
    auto* c = new ncclComm;
    c->rank = rank;
    c->nranks = nranks;
    c->fd.assign(nranks, -1);
    auto cleanup = [&](ncclResult_t r, const std::string& what) {
        for (int f : c->fd)
            if (f >= 0) close(f);
        delete c;
        return fail(r, "rank " + std::to_string(rank) + ": " + what);
    };
    auto address = [](const std::string& path, sockaddr_un* a) {
        std::memset(a, 0, sizeof *a);
        a->sun_family = AF_UNIX;
        if (path.size() >= sizeof a->sun_path) return false;
        std::memcpy(a->sun_path, path.data(), path.size());
        return true;
    };
    int listener = -1;
    std::string mine = socket_path(dir, rank);
    if (rank < nranks - 1) {
        sockaddr_un a;
        if (!address(mine, &a)) return cleanup(ncclSystemError, "socket path too long: " + mine);
        listener = socket(AF_UNIX, SOCK_STREAM, 0);
        if (listener < 0 || bind(listener, (sockaddr*)&a, sizeof a) != 0 || listen(listener, nranks) != 0) {
            std::string e = std::strerror(errno);
            if (listener >= 0) close(listener);
            return cleanup(ncclSystemError, "listen at " + mine + ": " + e);
        }
    }
    const char* tv = std::getenv("TOKENMILL_NCCL_EMU_TIMEOUT");
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::seconds(tv ? std::atoi(tv) : 60);
    for (int q = 0; q < rank; q++) {
        sockaddr_un a;
        std::string theirs = socket_path(dir, q);
        if (!address(theirs, &a)) return cleanup(ncclSystemError, "socket path too long: " + theirs);
        for (;;) {
            int f = socket(AF_UNIX, SOCK_STREAM, 0);
            if (f >= 0 && connect(f, (sockaddr*)&a, sizeof a) == 0) {
                c->fd[q] = f;
                break;
            }
            if (f >= 0) close(f);
            if (std::chrono::steady_clock::now() > deadline) {
                if (listener >= 0) close(listener);
                return cleanup(ncclSystemError, "rank " + std::to_string(q) + " never listened at " + theirs);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        int32_t me = rank;
        if (!write_all(c->fd[q], &me, 4)) {
            if (listener >= 0) close(listener);
            return cleanup(ncclSystemError, "introduce to rank " + std::to_string(q));
        }
    }
    for (int i = rank + 1; i < nranks; i++) {
        int f = accept(listener, nullptr, nullptr);
        int32_t who = -1;
        if (f < 0 || !read_all(f, &who, 4) || who <= rank || who >= nranks || c->fd[who] >= 0) {
            if (f >= 0) close(f);
            close(listener);
            return cleanup(ncclSystemError, "a bad connection at " + mine);
        }
        c->fd[who] = f;
    }
    if (listener >= 0) {
        close(listener);
        unlink(mine.c_str());
    }
    rmdir(dir.c_str());  // the last rank to leave removes it; the others' calls fail, harmlessly
    *out = c;
    return ncclSuccess;
}

namespace {
ncclResult_t close_comm(ncclComm_t comm) {
    if (ncclResult_t r = check_comm(comm)) return r;
    for (int f : comm->fd)
        if (f >= 0) close(f);
    delete comm;
    return ncclSuccess;
}
}  // namespace

API ncclResult_t ncclCommFinalize(ncclComm_t comm) { return check_comm(comm); }
API ncclResult_t ncclCommDestroy(ncclComm_t comm) { return close_comm(comm); }
API ncclResult_t ncclCommAbort(ncclComm_t comm) { return close_comm(comm); }

API ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
    if (ncclResult_t r = check_comm(comm)) return r;
    *count = comm->nranks;
    return ncclSuccess;
}
API ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
    if (ncclResult_t r = check_comm(comm)) return r;
    *rank = comm->rank;
    return ncclSuccess;
}
API ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* device) {
    if (ncclResult_t r = check_comm(comm)) return r;
    *device = 0;
    return ncclSuccess;
}

API ncclResult_t ncclGroupStart() {
    g_depth++;
    return ncclSuccess;
}

API ncclResult_t ncclGroupEnd() {
    if (g_depth == 0) return fail(ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
    if (--g_depth > 0) return ncclSuccess;
    std::vector<Op> ops;
    ops.swap(g_ops);
    return run(std::move(ops));
}

namespace {
// A send of `count` elements at `buf` to `peer`, or a receive into it from `peer`.
ncclResult_t p2p(Op::Kind kind, void* buf, size_t count, int type, int peer, ncclComm_t comm) {
    const bool send = kind == Op::Send;
    if (ncclResult_t r = check_comm(comm)) return r;
    if (ncclResult_t r = check_peer(comm, peer, send ? "send to rank" : "receive from rank")) return r;
    size_t bytes;
    if (ncclResult_t r = bytes_of(count, type, &bytes)) return r;
    if (ncclResult_t r = device_range(buf, bytes, send ? "ncclSend buffer" : "ncclRecv buffer")) return r;
    return submit({{kind, comm, peer, send ? buf : nullptr, send ? nullptr : buf, bytes}});
}
}  // namespace

API ncclResult_t ncclSend(const void* buf, size_t count, int type, int peer, ncclComm_t comm,
                          void* /*stream*/) {
    return p2p(Op::Send, const_cast<void*>(buf), count, type, peer, comm);
}

API ncclResult_t ncclRecv(void* buf, size_t count, int type, int peer, ncclComm_t comm,
                          void* /*stream*/) {
    return p2p(Op::Recv, buf, count, type, peer, comm);
}

// recv[r · count ..] = rank r's send, every rank.
API ncclResult_t ncclAllGather(const void* send, void* recv, size_t count, int type,
                               ncclComm_t comm, void* /*stream*/) {
    if (ncclResult_t r = check_comm(comm)) return r;
    size_t bytes;
    if (ncclResult_t r = bytes_of(count, type, &bytes)) return r;
    if (ncclResult_t r = device_range(send, bytes, "ncclAllGather send buffer")) return r;
    if (ncclResult_t r = device_range(recv, bytes * comm->nranks, "ncclAllGather receive buffer")) return r;
    std::vector<Op> ops;
    char* out = static_cast<char*>(recv);
    for (int q = 0; q < comm->nranks; q++) {
        if (q == comm->rank) {
            ops.push_back({Op::Copy, comm, q, send, out + (size_t)q * bytes, bytes});
        } else {
            ops.push_back({Op::Send, comm, q, send, nullptr, bytes});
            ops.push_back({Op::Recv, comm, q, nullptr, out + (size_t)q * bytes, bytes});
        }
    }
    return submit(std::move(ops));
}

// recv = root's send, every rank (in place when send == recv).
API ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, int type, int root,
                               ncclComm_t comm, void* /*stream*/) {
    if (ncclResult_t r = check_comm(comm)) return r;
    if (ncclResult_t r = check_peer(comm, root, "broadcast root")) return r;
    size_t bytes;
    if (ncclResult_t r = bytes_of(count, type, &bytes)) return r;
    if (ncclResult_t r = device_range(recv, bytes, "ncclBroadcast receive buffer")) return r;
    std::vector<Op> ops;
    if (comm->rank == root) {
        if (ncclResult_t r = device_range(send, bytes, "ncclBroadcast send buffer")) return r;
        if (send != recv) ops.push_back({Op::Copy, comm, root, send, recv, bytes});
        for (int q = 0; q < comm->nranks; q++)
            if (q != root) ops.push_back({Op::Send, comm, q, send, nullptr, bytes});
    } else {
        ops.push_back({Op::Recv, comm, root, nullptr, recv, bytes});
    }
    return submit(std::move(ops));
}

// The older in-place broadcast.
API ncclResult_t ncclBcast(void* buf, size_t count, int type, int root, ncclComm_t comm,
                           void* stream) {
    return ncclBroadcast(buf, buf, count, type, root, comm, stream);
}
