#include "dsb/version.h"

#include "dsb/client.h"

namespace dsb {

const char* Version() noexcept { return DSB_VERSION_STRING; }

}  // namespace dsb
