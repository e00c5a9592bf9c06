// Boost.JSON compiled into the client libraries (libdsb, libdsb-client)
// instead of linked: a program using dsb needs no libboost_json.so at run time
// and may use any Boost (or none) itself. This file is built with hidden
// visibility and the libraries' version scripts keep every boost:: symbol
// local, so a host's own Boost.JSON never binds to this copy or the other way
// round. Include it in no other target (the broker links Boost::json).
#include <boost/json/src.hpp>
