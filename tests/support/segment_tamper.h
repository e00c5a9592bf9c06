// Tools for tests that play a hostile or stopped client on a slot table:
// the segment's header mapped as any process of the group maps it, and a
// child process stopped (SIGSTOP) while it holds the queue mutex.
// Header-only; no thread rules beyond the usual fork caveats (the child
// uses system calls only).
#ifndef DSB_TESTS_SUPPORT_SEGMENT_TAMPER_H_
#define DSB_TESTS_SUPPORT_SEGMENT_TAMPER_H_

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "shm/segment_layout.h"

namespace dsb::testing {

// The header of segment `name` (without '/'), mapped read-write; h is
// nullptr if it cannot be opened.
struct RawHeader {
  shm::SegmentHeader* h = nullptr;
  void* base = MAP_FAILED;
  explicit RawHeader(const std::string& name) {
    const int fd = ::shm_open(("/" + name).c_str(), O_RDWR, 0);
    if (fd < 0) return;
    base = ::mmap(nullptr, shm::HeaderBytes(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (base != MAP_FAILED) h = static_cast<shm::SegmentHeader*>(base);
  }
  ~RawHeader() {
    if (base != MAP_FAILED) ::munmap(base, shm::HeaderBytes());
  }
  RawHeader(const RawHeader&) = delete;
  RawHeader& operator=(const RawHeader&) = delete;
};

// The whole segment `name` mapped read-write by a second mapping of the
// file: what a hostile group member writes through. ok() false if it
// cannot be opened.
class RawSegment {
 public:
  explicit RawSegment(const std::string& name) {
    const int fd = ::shm_open(("/" + name).c_str(), O_RDWR, 0);
    if (fd < 0) return;
    struct stat st {};
    if (::fstat(fd, &st) == 0) {
      size_ = static_cast<std::size_t>(st.st_size);
      base_ = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    }
    ::close(fd);
  }
  ~RawSegment() {
    if (base_ != MAP_FAILED) ::munmap(base_, size_);
  }
  RawSegment(const RawSegment&) = delete;
  RawSegment& operator=(const RawSegment&) = delete;

  bool ok() const { return base_ != MAP_FAILED; }
  shm::SegmentHeader& header() { return *static_cast<shm::SegmentHeader*>(base_); }
  std::uint32_t slot_count() { return header().slot_count; }
  shm::WaitEntry& entry(std::uint32_t i) {
    return reinterpret_cast<shm::WaitEntry*>(static_cast<char*>(base_) + shm::HeaderBytes())[i];
  }
  std::atomic<std::uint64_t>& word(std::uint32_t i) {
    auto* slots = reinterpret_cast<shm::SlotCell*>(
        static_cast<char*>(base_) + shm::HeaderBytes() +
        std::size_t{header().waiter_capacity} * sizeof(shm::WaitEntry));
    return slots[i].word;
  }

 private:
  void* base_ = MAP_FAILED;
  std::size_t size_ = 0;
};

// A child process that locks `segment`'s queue mutex and stops itself
// (SIGSTOP) holding it: a DigiScope instance suspended in a debugger inside
// the slow path. ok() once it is stopped holding it. Let go (SIGCONT) and
// reaped by Release() or the destructor.
class StoppedHolder {
 public:
  explicit StoppedHolder(const std::string& segment) {
    int fds[2];
    if (::pipe(fds) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      // Dies with the test (a test killed by its timeout must not leave a
      // stopped process holding the mutex behind).
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::close(fds[0]);
      RawHeader raw(segment);
      if (raw.h == nullptr || pthread_mutex_lock(&raw.h->queue_mutex) != 0) _exit(2);
      const char c = 1;
      if (::write(fds[1], &c, 1) != 1) _exit(3);
      ::raise(SIGSTOP);
      pthread_mutex_unlock(&raw.h->queue_mutex);
      _exit(0);
    }
    ::close(fds[1]);
    char c = 0;
    ok_ = pid_ > 0 && ::read(fds[0], &c, 1) == 1;
    ::close(fds[0]);
    int st = 0;
    ok_ = ok_ && ::waitpid(pid_, &st, WUNTRACED) == pid_ && WIFSTOPPED(st);
  }
  ~StoppedHolder() { Release(); }
  StoppedHolder(const StoppedHolder&) = delete;
  StoppedHolder& operator=(const StoppedHolder&) = delete;

  bool ok() const { return ok_; }
  pid_t pid() const { return pid_; }
  void Release() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGCONT);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
  bool ok_ = false;
};

}  // namespace dsb::testing

#endif  // DSB_TESTS_SUPPORT_SEGMENT_TAMPER_H_
