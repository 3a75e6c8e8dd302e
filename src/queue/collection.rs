//! Every queue of the server, by name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use super::fifo::{PutOutcome, Queue, XidSource};
use super::name::{self, NameError};
use crate::config::QueueConfig;

/// Queue lifecycle counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lifecycle {
    pub creates: u64,
    pub deletes: u64,
    /// Queues deleted for staying empty past their `max_queue_age`.
    pub expires: u64,
}

/// The named queues, created on first use.
pub struct QueueCollection {
    queues: RwLock<HashMap<Arc<str>, Arc<Queue>>>,
    xids: Arc<XidSource>,
    config: Arc<QueueConfig>,
    creates: AtomicU64,
    deletes: AtomicU64,
    expires: AtomicU64,
}

impl QueueCollection {
    pub fn new(config: QueueConfig) -> Self {
        QueueCollection {
            queues: RwLock::new(HashMap::new()),
            xids: Arc::new(XidSource::new()),
            config: Arc::new(config),
            creates: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            expires: AtomicU64::new(0),
        }
    }

    /// The queue called `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<Queue>> {
        self.queues
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// The queue called `name`, created if needed.
    pub fn get_or_create(&self, queue: &str) -> Result<Arc<Queue>, NameError> {
        if let Some(q) = self.get(queue) {
            return Ok(q);
        }
        name::validate(queue)?;
        let mut queues = self.queues.write().unwrap_or_else(|e| e.into_inner());
        let q = queues.entry(Arc::from(queue)).or_insert_with_key(|name| {
            self.creates.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(queue = %name, "queue created");
            Arc::new(Queue::new(
                name.clone(),
                self.config.clone(),
                self.xids.clone(),
            ))
        });
        Ok(q.clone())
    }

    /// Appends items to `queue`, creating it if needed.
    pub fn put(
        &self,
        queue: &str,
        items: &[Bytes],
        expires_ms: Option<i64>,
    ) -> Result<PutOutcome, NameError> {
        loop {
            // A queue deleted between lookup and put is looked up (created) again.
            if let Ok(outcome) = self
                .get_or_create(queue)?
                .put(items.iter().cloned(), expires_ms)
            {
                return Ok(outcome);
            }
        }
    }

    /// Removes `queue` entirely. Returns whether it existed.
    pub fn delete(&self, queue: &str) -> bool {
        let removed = self
            .queues
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(queue);
        match removed {
            Some(q) => {
                q.delete();
                self.deletes.fetch_add(1, Ordering::Relaxed);
                tracing::info!(queue, "queue deleted");
                true
            }
            None => false,
        }
    }

    /// Every queue, sorted by name.
    pub fn all(&self) -> Vec<Arc<Queue>> {
        let queues = self.queues.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = queues.values().cloned().collect();
        drop(queues);
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    pub fn lifecycle(&self) -> Lifecycle {
        Lifecycle {
            creates: self.creates.load(Ordering::Relaxed),
            deletes: self.deletes.load(Ordering::Relaxed),
            expires: self.expires.load(Ordering::Relaxed),
        }
    }
}
