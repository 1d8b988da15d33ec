-- The mysql_cdc source's table in the docker-compose MySQL 8.
CREATE DATABASE IF NOT EXISTS inventory CHARACTER SET utf8mb4;
CREATE TABLE inventory.stock (
  sku varchar(20) PRIMARY KEY,
  qty int NOT NULL,
  price decimal(10,2),
  updated_at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
);
INSERT INTO inventory.stock (sku, qty, price) VALUES ('A-1', 10, 4.50), ('B-2', 3, 19.99);
