#include "tools/bench-etcd/etcd_metrics.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <sstream>

namespace dsb::bench {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

Result<std::map<std::string, double>> EtcdMetrics(const std::string& endpoint,
                                                   const std::vector<std::string>& names,
                                                   std::chrono::milliseconds timeout) {
  constexpr std::string_view kScheme = "http://";
  const auto colon = endpoint.rfind(':');
  if (endpoint.rfind(kScheme, 0) != 0 || colon == std::string::npos || colon < kScheme.size()) {
    return Status(Errc::kInvalidArgument, "not an http://host:port endpoint: " + endpoint);
  }
  const std::string host = endpoint.substr(kScheme.size(), colon - kScheme.size());
  const std::string port = endpoint.substr(colon + 1);
  std::string body;
  try {
    asio::io_context io;
    beast::tcp_stream stream(io);
    stream.expires_after(timeout);
    asio::ip::tcp::resolver resolver(io);
    stream.connect(resolver.resolve(host, port));
    http::request<http::empty_body> req(http::verb::get, "/metrics", 11);
    req.set(http::field::host, host);
    http::write(stream, req);
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(stream, buffer, res);
    if (res.result_int() / 100 != 2) {
      return Status(Errc::kProtocol,
                    endpoint + "/metrics: HTTP " + std::to_string(res.result_int()));
    }
    body = std::move(res.body());
  } catch (const std::exception& e) {
    return Status(Errc::kBrokerUnavailable, endpoint + "/metrics: " + e.what());
  }
  std::map<std::string, double> out;
  for (const auto& n : names) out[n] = 0.0;
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;  // HELP and TYPE lines
    const auto name_end = line.find_first_of("{ ");
    if (name_end == std::string::npos) continue;
    auto it = out.find(line.substr(0, name_end));
    if (it == out.end()) continue;
    try {
      it->second += std::stod(line.substr(line.rfind(' ') + 1));
    } catch (const std::exception&) {
      // A sample that does not parse is left out (etcd writes none).
    }
  }
  return out;
}

}  // namespace dsb::bench
