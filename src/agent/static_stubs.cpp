// The agent never resolves host, service or protocol names (an onward ssh hop
// runs the OpenSSH client, which does its own resolving). libevent's evutil
// still refers to the resolver functions, and in a static glibc link those
// drag in NSS, the DNS resolver and dlopen: about half of the agent's size.
// These definitions satisfy the references so the resolver is never linked;
// each fails the way the real function fails when a name is unknown.
#include <netdb.h>
#include <sys/socket.h>

extern "C" {

int getaddrinfo(const char *, const char *, const struct addrinfo *, struct addrinfo **res) {
    if (res) *res = nullptr;
    return EAI_FAIL;
}

void freeaddrinfo(struct addrinfo *) {}

const char *gai_strerror(int) { return "name resolution is not available in the spore agent"; }

struct servent *getservbyname(const char *, const char *) { return nullptr; }

struct protoent *getprotobynumber(int) { return nullptr; }

}

#include <cstdlib>
#include <unistd.h>

// libstdc++'s default terminate handler demangles the type of the escaping
// exception, which links the whole C++ demangler (~50 KB) into the agent.
// An agent that reaches std::terminate has a bug either way; say so briefly.
namespace __gnu_cxx {
void __verbose_terminate_handler() {
    static const char msg[] = "spore-agent: terminate called (uncaught exception)\n";
    ssize_t n = write(2, msg, sizeof msg - 1);
    (void)n;
    abort();
}
}  // namespace __gnu_cxx
