// The C ABI over dsb::Client. No exception may cross this boundary.
#include "dsb/dsb.h"

#include <string>

#include "client/permit_access.h"
#include "dsb/client.h"
#include "dsb/version.h"

// The C codes and dsb::Errc come from one list (dsb/errc_list.h); these
// checks fail the build if either side stops expanding it faithfully.
#define DSB_ERRC_CHECK_(c_name, cpp_name, value, wire_name, message)         \
  static_assert(static_cast<int>(c_name) == (value) &&                      \
                    static_cast<int>(dsb::Errc::cpp_name) == (value),        \
                #c_name " and dsb::Errc::" #cpp_name " must both be " #value);
DSB_ERRC_LIST(DSB_ERRC_CHECK_)
#undef DSB_ERRC_CHECK_

static_assert(DSB_LOG_DEBUG == static_cast<int>(dsb::LogLevel::kDebug) &&
              DSB_LOG_INFO == static_cast<int>(dsb::LogLevel::kInfo) &&
              DSB_LOG_WARNING == static_cast<int>(dsb::LogLevel::kWarning) &&
              DSB_LOG_ERROR == static_cast<int>(dsb::LogLevel::kError));

struct dsb_client {
  std::unique_ptr<dsb::Client> client;
};
struct dsb_cancel {
  dsb::CancelToken token;
};

namespace {

thread_local std::string tl_last_error;

dsb_status Fail(std::error_code ec, std::string message = {}) {
  tl_last_error = message.empty() ? ec.message() : std::move(message);
  return static_cast<dsb_status>(ec.value());
}

dsb_status Fail(dsb::Errc e, std::string message = {}) {
  return Fail(make_error_code(e), std::move(message));
}

}  // namespace

extern "C" {

dsb_status dsb_connect(const char* socket_path, const char* target, const char* name,
                       int32_t connect_timeout_ms, dsb_client** out) {
  return dsb_connect_ex(socket_path, target, name, nullptr, connect_timeout_ms, out);
}

dsb_status dsb_connect_ex(const char* socket_path, const char* target, const char* name,
                          const char* broker_user, int32_t connect_timeout_ms, dsb_client** out) {
  try {
    if (out == nullptr || socket_path == nullptr || target == nullptr || connect_timeout_ms < 0) {
      return Fail(dsb::Errc::kInvalidArgument,
                  "dsb_connect: socket_path, target and out must be set, timeout >= 0");
    }
    *out = nullptr;
    dsb::ClientOptions options;
    options.socket_path = socket_path;
    options.target = target;
    if (name != nullptr) options.name = name;
    if (broker_user != nullptr) options.broker_user = broker_user;
    options.connect_timeout = std::chrono::milliseconds(connect_timeout_ms);
    std::error_code ec;
    std::string message;
    auto client = dsb::Client::Connect(options, ec, &message);
    if (!client) return Fail(ec, message);
    *out = new dsb_client{std::move(client)};
    return DSB_OK;
  } catch (...) {
    return Fail(dsb::Errc::kInternal, "dsb_connect: out of memory");
  }
}

void dsb_close(dsb_client* client) {
  try {
    delete client;
  } catch (...) {
  }
}

dsb_status dsb_acquire(dsb_client* client, int32_t timeout_ms, dsb_cancel* cancel,
                       dsb_permit* out) {
  if (client == nullptr || out == nullptr || timeout_ms < 0) {
    return Fail(dsb::Errc::kInvalidArgument, "dsb_acquire: client and out must be set, timeout >= 0");
  }
  *out = dsb_permit{0, 0, 0};
  std::error_code ec;
  dsb::Permit p = client->client->Acquire(std::chrono::milliseconds(timeout_ms), ec,
                                          cancel != nullptr ? &cancel->token : nullptr);
  if (ec) return Fail(ec);
  out->index = p.slot_index();
  out->word = dsb::PermitAccess::Word(p);
  dsb::PermitAccess::Detach(p);
  return DSB_OK;
}

dsb_status dsb_try_acquire(dsb_client* client, dsb_permit* out) {
  if (client == nullptr || out == nullptr) {
    return Fail(dsb::Errc::kInvalidArgument, "dsb_try_acquire: client and out must be set");
  }
  *out = dsb_permit{0, 0, 0};
  std::error_code ec;
  dsb::Permit p = client->client->TryAcquire(ec);
  if (ec) return Fail(ec);
  out->index = p.slot_index();
  out->word = dsb::PermitAccess::Word(p);
  dsb::PermitAccess::Detach(p);
  return DSB_OK;
}

void dsb_release(dsb_client* client, dsb_permit* permit) {
  if (client == nullptr || permit == nullptr || permit->word == 0) return;
  dsb::PermitAccess::ReleaseRaw(*client->client, permit->index, permit->word);
  *permit = dsb_permit{0, 0, 0};
}

void dsb_release_confirmed(dsb_client* client, dsb_permit* permit) {
  if (client == nullptr || permit == nullptr || permit->word == 0) return;
  dsb::PermitAccess::ReleaseConfirmedRaw(*client->client, permit->index, permit->word);
  *permit = dsb_permit{0, 0, 0};
}

int32_t dsb_should_yield(const dsb_client* client, const dsb_permit* permit) {
  if (client == nullptr || permit == nullptr || permit->word == 0) return 0;
  return dsb::PermitAccess::ShouldYieldRaw(*client->client, permit->index, permit->word) ? 1 : 0;
}

dsb_status dsb_report_session_limit(dsb_client* client, const char* detail) {
  if (client == nullptr) return Fail(dsb::Errc::kInvalidArgument, "dsb_report_session_limit: null client");
  std::error_code ec = client->client->ReportSessionLimit(detail != nullptr ? detail : "");
  return ec ? Fail(ec) : DSB_OK;
}

dsb_status dsb_report_refusal(dsb_client* client, const dsb_permit* refused,
                              const char* detail) {
  if (client == nullptr) return Fail(dsb::Errc::kInvalidArgument, "dsb_report_refusal: null client");
  try {
    const std::string_view d = detail != nullptr ? detail : "";
    const std::error_code ec =
        refused != nullptr && refused->word != 0
            ? dsb::PermitAccess::ReportRefusalRaw(*client->client, d, refused->index, refused->word)
            : client->client->ReportSessionLimit(d);
    return ec ? Fail(ec) : DSB_OK;
  } catch (...) {
    return Fail(dsb::Errc::kInternal, "dsb_report_refusal: out of memory");
  }
}

dsb_cancel* dsb_cancel_create(void) {
  try {
    return new dsb_cancel();
  } catch (...) {
    return nullptr;
  }
}

void dsb_cancel_fire(dsb_cancel* cancel) {
  if (cancel != nullptr) cancel->token.Cancel();
}

void dsb_cancel_destroy(dsb_cancel* cancel) { delete cancel; }

const char* dsb_strerror(dsb_status code) {
  return dsb::ErrcMessage(static_cast<dsb::Errc>(code));
}

const char* dsb_last_error(void) { return tl_last_error.c_str(); }

const char* dsb_version(void) { return DSB_VERSION_STRING; }

void dsb_set_log_callback(dsb_log_callback callback, void* context) {
  if (callback == nullptr) {
    dsb::SetLogSink(nullptr);
    return;
  }
  try {
    dsb::SetLogSink([callback, context](dsb::LogLevel level, std::string_view message) {
      const std::string line(message);  // NUL-terminated for C
      callback(static_cast<int32_t>(level), line.c_str(), context);
    });
  } catch (...) {
    // Out of memory building the sink: back to stderr (the previous callback
    // must not be called after this returns, its context may be freed).
    dsb::SetLogSink(nullptr);
  }
}

}  // extern "C"
