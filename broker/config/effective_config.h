// The effective broker config as TOML (`dsb-broker --check` prints it): every
// key with the value the broker runs with, defaults filled in, paths absolute.
// The output is a broker file again (feed it to --check); what is not a key of
// the broker file (the cluster file's targets and settings, why a default was
// taken, the fitted max_clients) is written as comments. Secrets are not
// printed: key_file is the path only.
#ifndef DSB_BROKER_CONFIG_EFFECTIVE_CONFIG_H_
#define DSB_BROKER_CONFIG_EFFECTIVE_CONFIG_H_

#include <string>
#include <string_view>

#include "broker/config/broker_config.h"

namespace dsb::config {

// `config` as a TOML broker file; each line of `header` is written first as
// a comment. REQUIRES: config came from ParseBrokerConfig (valid).
std::string EffectiveConfigToml(const BrokerConfig& config, std::string_view header);

// `s` as a TOML basic string with its quotes ("a\"b"); control characters
// escaped as \uXXXX.
std::string TomlString(std::string_view s);

}  // namespace dsb::config

#endif  // DSB_BROKER_CONFIG_EFFECTIVE_CONFIG_H_
