// docker: `docker exec --interactive [--user=U] <container> <boot>`, or with
// `image` `docker run --interactive --rm [--user=U] <image> <boot>`. No terminal: stdio stays
// a socketpair, so the stream is 8-bit clean and not size-limited.
#include "core/error.h"
#include "methods/method.h"

namespace spore {

LaunchSpec build_docker(const LaunchInput &in) {
    const cJSON *o = in.options;
    std::string container = opt_str(o, "container"), image = opt_str(o, "image"), user = opt_str(o, "username");
    if (container.empty() == image.empty())
        throw Error(SPORE_EINVAL, "method docker needs exactly one of the options 'container' and 'image'");
    LaunchSpec spec;
    spec.argv = {opt_str(o, "docker_path", "docker")};
    if (!container.empty()) spec.argv.insert(spec.argv.end(), {"exec", "--interactive"});
    else spec.argv.insert(spec.argv.end(), {"run", "--interactive", "--rm"});
    if (!user.empty()) spec.argv.push_back("--user=" + user);
    spec.argv.push_back(container.empty() ? image : container);
    auto boot = in.boot_argv();
    spec.argv.insert(spec.argv.end(), boot.begin(), boot.end());
    return spec;
}

}  // namespace spore
