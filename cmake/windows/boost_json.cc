// Boost.JSON compiled from its headers for the Windows build: Debian's
// libboost-json is a Linux library and there is no MinGW one, so
// cmake/windows_deps.cmake builds this file once into dsb_win_boost_json,
// which its Boost::json target links. Include it in no other target.
#include <boost/json/src.hpp>
